"""Data: a name or a path -> train / validation / test tensors in memory plus a ``DataInfo``.

All splits are float32 tensors of shape (N, num_dims), flattened; ``DataInfo.shape`` keeps
the shape of one datum for figures and conv nets. Values are scaled to [0, 1] for image data.
With ``binarize="dynamic"`` the tensors hold pixel intensities and each batch is binarized
afresh when drawn (``transforms.binarize``); with ``"static"`` they hold one seeded draw.
See docs/data.md.
"""

from __future__ import annotations

from aevb.data.bundled import RawDataset
from aevb.data.registry import DATASETS, NamedDataset
from aevb.data.splits import DataInfo, Splits, build_datasets, load_raw
from aevb.data.transforms import binarize, dequantize, prepare_batch

__all__ = ["DataInfo", "Splits", "build_datasets", "load_raw", "DATASETS", "NamedDataset", "RawDataset",
           "binarize", "dequantize", "prepare_batch"]
