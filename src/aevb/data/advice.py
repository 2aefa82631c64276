"""Warnings about a data/model pairing that trains but is probably not what was meant.

- ``latent_dim >= num_dims``: the code is no smaller than the data (an autoencoder can copy x).
- real-valued columns on very different scales (or far from zero) under a gaussian or laplace
  likelihood with one shared scale: the widest column dominates log p(x|z); standardize first.
- integer-level data (8-bit pixels) under a continuous density without dequantization: the number
  is a density, not a probability (no bits/dim); suggest --dequantize uniform.
"""

from __future__ import annotations

import torch

SCALE_RATIO = 100.0  # largest / smallest column std above which unstandardized real data are flagged


def data_warnings(x_train: torch.Tensor, info, likelihood: str, latent_dim: int) -> list[str]:
    """Sentences to show before training (empty when nothing looks wrong)."""
    out = []
    if latent_dim >= info.num_dims:
        out.append(f"latent_dim = {latent_dim} is not smaller than the {info.num_dims} data dimensions: the code "
                   "is no smaller than the data; choose --latent-dim below the number of columns")
    if (likelihood in ("gaussian", "laplace") and info.support == "real" and not info.standardization
            and len(x_train) > 1):
        std = x_train.double().std(0)
        mean = x_train.double().mean(0).abs()
        spread = float(std.max() / std.clamp_min(1e-12).min())
        offset = float((mean / std.clamp_min(1e-12)).max())
        if spread > SCALE_RATIO or offset > SCALE_RATIO:
            out.append(f"the real-valued columns are not on one scale (std from {float(std.min()):.3g} to "
                       f"{float(std.max()):.3g}, means up to {float(mean.max()):.3g}) under a {likelihood} likelihood: "
                       "the widest columns dominate log p(x|z); train with --standardize true (data.standardize)")
    if (likelihood in ("gaussian", "laplace", "continuous_bernoulli") and info.levels and info.support == "unit_interval"
            and getattr(info, "dequantization", "none") == "none"):
        out.append(f"{info.levels}-level integer data under a continuous {likelihood} density: log p(x) will be a "
                   "density on [0, 1]^D with no bits/dim, not comparable with discrete likelihoods; "
                   "--dequantize uniform makes it a bound on the integers' code length")
    return out
