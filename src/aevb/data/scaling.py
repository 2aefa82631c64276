"""Per-feature affine scaling of a table or image array, and the log-Jacobian it adds to a density.

x_model_j = (x_j - offset_j) / scale_j. A density of x_model turns into a density of x by the
change of variables log p_X(x) = log p_model(x_model) - sum_j log scale_j (nats), so scores of
models fit with different scalings stay comparable as densities of the same X.

Modes (``SCALINGS``):
    "none":     offset 0, scale 1.
    "max":      one global divisor, the largest value of X (images: 0..255 -> [0, 1]).
    "levels":   one global divisor, the number of levels L (dequantized integers (x + u) / L in [0, 1)).
    "minmax":   per feature, (x_j - min_j) / (max_j - min_j) into [0, 1] (constant features: scale 1);
                new values outside the fitted range are clipped to [0, 1].
    "standard": per feature, (x_j - mean_j) / std_j (constant features: std 1).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

SCALINGS = ("auto", "none", "max", "minmax", "standard")


def is_integer_levels(X: np.ndarray) -> bool:
    """True for non-negative integer values (pixel levels 0..255, the 0..16 digits, counts)."""
    if np.issubdtype(X.dtype, np.integer) or X.dtype == np.bool_:
        return bool(X.min() >= 0) if X.size else False
    return bool(X.size and X.min() >= 0 and np.array_equal(X, np.round(X)))


def resolve_scaling(requested: str, X: np.ndarray, likelihood: str, dequantize: bool) -> str:
    """The mode "auto" stands for, given the data and the likelihood (see ``AEVB``'s docstring)."""
    if dequantize:
        return "levels"
    if requested != "auto":
        return requested
    if likelihood == "categorical":
        return "none"
    lo, hi = float(X.min()), float(X.max())
    if is_integer_levels(X):
        return "max" if hi > 1 else "none"
    if lo >= 0 and hi <= 1:
        return "none"
    return "standard" if likelihood in ("gaussian", "laplace") else "minmax"


@dataclass
class FeatureScaling:
    """x_model = (x - offset) / scale, per feature; ``fit`` chooses offset and scale from data."""

    mode: str
    offset: np.ndarray
    scale: np.ndarray
    clip: bool = False

    @classmethod
    def fit(cls, mode: str, X: np.ndarray, levels: int | None = None) -> "FeatureScaling":
        """Offsets and scales (each (D,), float64) from X (N, D)."""
        num_dims = X.shape[1]
        offset, scale = np.zeros(num_dims), np.ones(num_dims)
        if mode == "max":
            scale[:] = max(float(X.max()), 1e-12)
        elif mode == "levels":
            if levels is None:
                raise ValueError("scaling 'levels' needs the number of levels")
            scale[:] = float(levels)
        elif mode == "minmax":
            offset, span = X.min(0).astype(np.float64), np.ptp(X, 0).astype(np.float64)
            scale = np.where(span > 0, span, 1.0)
        elif mode == "standard":
            offset, std = X.mean(0, dtype=np.float64), X.std(0, dtype=np.float64)
            scale = np.where(std > 0, std, 1.0)
        elif mode != "none":
            raise ValueError(f"scaling = {mode!r}: allowed values are {', '.join(SCALINGS)}")
        return cls(mode, offset, scale, clip=(mode == "minmax"))

    def apply(self, X: np.ndarray) -> np.ndarray:
        """(N, D) float32 model values."""
        out = (X - self.offset) / self.scale
        if self.clip:
            out = np.clip(out, 0.0, 1.0)
        return out.astype(np.float32)

    def invert(self, x: np.ndarray) -> np.ndarray:
        """Model values back in the units of X."""
        return x * self.scale + self.offset

    @property
    def log_det_jacobian(self) -> float:
        """sum_j log |d x_model_j / d x_j| = -sum_j log scale_j, in nats (added to a log-density)."""
        return float(-np.log(self.scale).sum())
