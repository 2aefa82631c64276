"""Data-level checks run on every data set before it is split: empty, NaN/inf, label counts.

Whether the data fit a likelihood (e.g. bernoulli needs 0/1) is checked by the likelihood's
``check_data`` (likelihoods.py), called from the trainer.
"""

from __future__ import annotations

import numpy as np


def check_array(x: np.ndarray, where: str, missing: str = "error") -> None:
    """Raise ValueError for an empty array or any NaN/inf, naming the first bad example and dimension.

    With ``missing = "mask"`` NaN marks an unobserved entry and is allowed; inf is still refused.
    """
    if x.size == 0 or len(x) == 0:
        raise ValueError(f"{where}: the data are empty (shape {tuple(x.shape)}); expected at least one example")
    if np.issubdtype(x.dtype, np.floating):
        flat = x.reshape(len(x), -1)
        bad = np.isinf(flat) if missing == "mask" else ~np.isfinite(flat)
        if bad.any():
            i, j = (int(v) for v in np.argwhere(bad)[0])
            hint = ("inf is not data; NaN marks a missing entry" if missing == "mask" else
                    "NaN and inf are not allowed (remove or impute them, or mark NaN as missing with "
                    "--set data.missing=mask)")
            raise ValueError(f"{where}: example {i}, dimension {j} is {flat[i, j]}; {hint}")
        if x.dtype.itemsize > 4:  # aevb trains in float32: finite float64 values beyond its range become inf
            big = np.abs(np.nan_to_num(flat)) > np.finfo(np.float32).max
            if big.any():
                i, j = (int(v) for v in np.argwhere(big)[0])
                raise ValueError(f"{where}: example {i}, dimension {j} is {flat[i, j]:.6g}, which "
                                 f"overflows float32 (largest {np.finfo(np.float32).max:.4g}), the precision aevb "
                                 "trains in; rescale the data first (divide by a constant, or take logs of "
                                 "positive values), then train (with data.standardize if the columns differ in scale)")


def check_labels(x: np.ndarray, y, where: str) -> None:
    """Labels, when present, must be one per example."""
    if y is not None and len(y) != len(x):
        raise ValueError(f"{where}: {len(x)} examples but {len(y)} labels; they must match one to one")


def check_raw(raw, where: str, missing: str = "error") -> None:
    """All checks on the unsplit data and on each fixed split (``missing``: see ``check_array``)."""
    check_array(raw.x, where, missing)
    check_labels(raw.x, raw.y, where)
    for split, (x, y) in raw.fixed_splits.items():
        check_array(x, f"{where} {split} split", missing)
        check_labels(x, y, f"{where} {split} split")


def check_counts(x: np.ndarray, where: str) -> None:
    """Count data must be non-negative integers; name the first bad example (0-based, in file order), column, value."""
    flat = np.asarray(x).reshape(len(x), -1)
    finite = np.isfinite(flat) if np.issubdtype(flat.dtype, np.floating) else np.ones(flat.shape, bool)
    bad = finite & ((flat < 0) | (np.mod(np.where(finite, flat, 0), 1) != 0))
    if bad.any():
        i, j = (int(v) for v in np.argwhere(bad)[0])
        raise ValueError(f"{where}: count likelihoods need non-negative integer counts, but example {i} (0-based, in "
                         f"file order), column {j} is {flat[i, j]:g}. Give them raw counts (not normalised, "
                         "log-transformed or scaled values), or choose gaussian/laplace for real-valued data.")
