"""Data: a name or a path -> train / validation / test tensors in memory plus a ``DataInfo``.

All splits are float32 tensors of shape (N, num_dims), flattened; ``DataInfo.shape`` keeps
the shape of one datum for figures and conv nets. Values are scaled to [0, 1] for image data.
With ``binarize="dynamic"`` the tensors hold pixel intensities and each batch is binarized
afresh when drawn (``transforms.binarize``); with ``"static"`` they hold one seeded draw.
"""

from __future__ import annotations

from .splits import DataInfo, Splits, build_datasets
from .bundled import DATASETS, RawDataset
from .transforms import binarize, prepare_batch

__all__ = ["DataInfo", "Splits", "build_datasets", "DATASETS", "RawDataset", "binarize", "prepare_batch"]
