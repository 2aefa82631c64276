"""Writers of small synthetic data files for the data tests (IDX, .amat)."""

from __future__ import annotations

import gzip
import struct

import numpy as np


def idx_bytes(a: np.ndarray) -> bytes:
    """IDX encoding of a uint8 array: 00 00 08 NDIM, big-endian uint32 sizes, data."""
    return bytes([0, 0, 8, a.ndim]) + struct.pack(f">{a.ndim}I", *a.shape) + a.astype(np.uint8).tobytes()


def write_idx_set(folder, num_train=12, num_test=5, seed=0, gz=True):
    """Four MNIST-style IDX files of random 28x28 images; returns (x_train, y_train, x_test, y_test)."""
    rng = np.random.default_rng(seed)
    arrays = (rng.integers(0, 256, (num_train, 28, 28)), rng.integers(0, 10, num_train),
              rng.integers(0, 256, (num_test, 28, 28)), rng.integers(0, 10, num_test))
    arrays = tuple(a.astype(np.uint8) for a in arrays)
    names = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
    folder.mkdir(parents=True, exist_ok=True)
    for name, a in zip(names, arrays):
        if gz:
            (folder / (name + ".gz")).write_bytes(gzip.compress(idx_bytes(a)))
        else:
            (folder / name).write_bytes(idx_bytes(a))
    return arrays


def write_amat_set(folder, sizes=(6, 3, 2), seed=0, gz=False):
    """binarized_mnist_{train,valid,test}.amat (``.amat.gz`` with ``gz``) with random 0/1 rows; returns the arrays."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for split, n in zip(("train", "valid", "test"), sizes):
        a = rng.integers(0, 2, (n, 784)).astype(np.uint8)
        text = "".join(" ".join(map(str, r)) + "\n" for r in a).encode()
        if gz:
            (folder / f"binarized_mnist_{split}.amat.gz").write_bytes(gzip.compress(text))
        else:
            (folder / f"binarized_mnist_{split}.amat").write_bytes(text)
        out.append(a)
    return out
