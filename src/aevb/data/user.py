"""The user's own data: a ``.npy``/``.npz`` array, a folder of images, or a CSV table.

The kind of values is inferred from the data (``infer_range``):
  - only 0 and 1                                -> binary (kept as is);
  - uint8, or integers in 0..255 reaching 255   -> 8-bit: scaled by 1/255 into [0, 1], 256 levels;
  - anything else within [0, 1]                 -> unit_interval (kept as is);
  - otherwise (e.g. integer counts 0..16)       -> real (unscaled; ``data.standardize`` optional).
``data.max_value = M`` overrides the inference: x / M in [0, 1] (M + 1 levels for integer data), e.g.
M = 16 for scikit-learn's 0..16 digits written to a CSV.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from aevb.data.bundled import RawDataset
from aevb.data.readers import read_array

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".pgm", ".ppm"}


def infer_range(x: np.ndarray) -> dict:
    """{"max_value", "levels", "binary"} for RawDataset from the values (see module docstring)."""
    finite = x[np.isfinite(x)] if np.issubdtype(x.dtype, np.floating) else x
    if finite.size == 0:
        return {"max_value": None, "levels": None, "binary": False}
    lo, hi = float(finite.min()), float(finite.max())
    integer = np.issubdtype(x.dtype, np.integer) or bool(np.all(np.mod(finite, 1) == 0))
    if integer and lo >= 0 and hi <= 1:
        return {"max_value": 1.0, "levels": 2, "binary": True}
    if integer and lo >= 0 and hi <= 255 and (x.dtype == np.uint8 or hi == 255):
        return {"max_value": 255.0, "levels": 256, "binary": False}
    if lo >= 0 and hi <= 1:
        return {"max_value": 1.0, "levels": None, "binary": False}
    return {"max_value": None, "levels": None, "binary": False}


def read_npy_npz(path: Path, data_cfg) -> RawDataset:
    """An (N, ...) array; from an .npz also labels under ``labels``/``y`` when present."""
    x = read_array(path, getattr(data_cfg, "key", ""))
    if x.ndim < 2:
        raise ValueError(f"{path}: array has shape {x.shape}; expected (N, ...) with one example per row")
    if not (np.issubdtype(x.dtype, np.number) or x.dtype == bool):
        raise ValueError(f"{path}: array has dtype {x.dtype}; expected numbers")
    x = x.astype(np.uint8) if x.dtype == bool else x
    y = None
    if path.suffix == ".npz":
        with np.load(path, allow_pickle=False) as f:
            name = next((k for k in ("labels", "y") if k in f.files), None)
            y = None if name is None else f[name]
        if y is not None and len(y) != len(x):
            raise ValueError(f"{path}: {len(x)} examples but {len(y)} labels (array {name!r}); they must match one to one")
    return RawDataset(x, None if y is None else np.asarray(y).astype(np.int64), tuple(x.shape[1:]),
                      source=f"array file {path}", **infer_range(x))


def read_user_data(path: Path, data_cfg) -> RawDataset:
    """Read the user's file or folder; ``data.max_value`` (if > 0) replaces the inferred range."""
    raw = _read_user_data(path, data_cfg)
    max_value = float(getattr(data_cfg, "max_value", 0.0) or 0.0)
    if max_value > 0:
        x = raw.x[np.isfinite(raw.x)] if np.issubdtype(raw.x.dtype, np.floating) else raw.x
        if x.size and (float(x.min()) < 0 or float(x.max()) > max_value):
            raise ValueError(f"{path}: data.max_value = {max_value:g}, but the values span "
                             f"[{float(x.min()):g}, {float(x.max()):g}]; they must lie in [0, {max_value:g}]")
        integer = np.issubdtype(raw.x.dtype, np.integer) or bool(np.all(np.mod(x, 1) == 0))
        raw.max_value = max_value
        raw.levels = int(max_value) + 1 if integer and max_value.is_integer() else None
    return raw


FASHION_LABELS = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                  "Ankle boot"]


def idx_files(folder: Path) -> tuple[Path, Path, Path, Path] | None:
    """(train images, train labels, test images, test labels) of MNIST-format IDX files in folder, or None.

    Names as MNIST and Fashion-MNIST ship them (``train-images-idx3-ubyte``, ``t10k-labels-idx1-ubyte``),
    gzipped or not; the test files are those whose name starts with t10k or contains "test".
    """
    found: dict[tuple[bool, int], Path] = {}
    for f in sorted(folder.iterdir()):
        name = f.name.lower()
        for ndim in (3, 1):
            if f"idx{ndim}-ubyte" in name and f.is_file():
                found.setdefault((name.startswith("t10k") or "test" in name, ndim), f)
    keys = [(False, 3), (False, 1), (True, 3), (True, 1)]
    return tuple(found[k] for k in keys) if all(k in found for k in keys) else None  # type: ignore[return-value]


def read_idx_folder(folder: Path) -> RawDataset:
    """MNIST-format IDX files: train images/labels (split into train/valid by fractions) and a fixed test set."""
    from aevb.data.readers import read_idx

    paths = idx_files(folder)
    assert paths is not None
    x_train, y_train, x_test, y_test = (read_idx(p, nd) for p, nd in zip(paths, (3, 1, 3, 1)))
    for images, labels, i in ((x_train, y_train, 0), (x_test, y_test, 2)):
        if len(images) != len(labels):
            raise ValueError(f"{paths[i]} holds {len(images)} images but {paths[i + 1]} holds {len(labels)} labels; "
                             "they must match one to one")
    if x_train.shape[1:] != x_test.shape[1:]:
        raise ValueError(f"{folder}: train images are {x_train.shape[1:]} but test images are {x_test.shape[1:]}")
    fashion = "fashion" in str(folder).lower()
    return RawDataset(x_train, y_train.astype(np.int64), tuple(x_train.shape[1:]), 255.0, 256,
                      fixed_splits={"test": (x_test, y_test.astype(np.int64))},
                      source=f"IDX files in {folder}", label_names=FASHION_LABELS if fashion else None)


def _read_user_data(path: Path, data_cfg) -> RawDataset:
    """Dispatch on the path: folder -> images, .npy/.npz -> array, .csv/.tsv/.txt -> table."""
    if path.is_dir() and idx_files(path):
        return read_idx_folder(path)
    if path.is_dir():
        from aevb.data.images import read_image_folder

        return read_image_folder(path, getattr(data_cfg, "image_size", ""))
    suffix = path.suffix.lower()
    if suffix in (".npy", ".npz"):
        return read_npy_npz(path, data_cfg)
    if suffix in (".mtx", ".h5ad") or path.name.lower().endswith(".mtx.gz"):
        from aevb.data.count_files import read_h5ad, read_mtx

        if suffix == ".h5ad":
            return read_h5ad(path, getattr(data_cfg, "label_column", ""))
        return read_mtx(path, bool(getattr(data_cfg, "transpose", False)))
    if suffix in (".csv", ".tsv", ".txt"):
        from aevb.data.tables import read_csv

        return read_csv(path, getattr(data_cfg, "label_column", ""), getattr(data_cfg, "missing", "error") == "mask")
    raise ValueError(f"{path}: unsupported file type {suffix!r}; expected a folder of images, .npy, .npz, .csv, "
                     ".mtx (MatrixMarket) or .h5ad (AnnData)")
