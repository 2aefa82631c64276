"""Per-batch and per-split transforms: binarization and scaling."""

from __future__ import annotations

import torch


def binarize(x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """One Bernoulli draw per pixel: x_bin ~ Bernoulli(x) for intensities x in [0, 1]."""
    return torch.bernoulli(x, generator=generator)


def prepare_batch(x: torch.Tensor, binarization: str, generator: torch.Generator | None = None) -> torch.Tensor:
    """What the model sees: a fresh binarization for ``"dynamic"``, x itself otherwise."""
    if binarization == "dynamic":
        return binarize(x, generator)
    return x
