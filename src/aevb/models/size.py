"""How big a model is, in words: parameters, bytes, and a rough CPU speed, with a warning when huge."""

from __future__ import annotations

import warnings

from torch import nn

LARGE_PARAMS = 20_000_000  # above this, build_model warns (a 784-500-500 Bernoulli VAE has 1.3 M)
FLOPS_PER_SECOND = 3e10  # one CPU thread, float32 products (measured: 50 ex/s at 100 M parameters)


def describe_size(model: nn.Module) -> str:
    """"N parameters, X MB of float32 weights, ~3X MB per checkpoint with Adam's moments, ~R ex/s"."""
    num_params = sum(p.numel() for p in model.parameters())
    weights_mb = 4 * num_params / 1e6
    # forward + backward: about 6 floating-point operations per parameter per example (one z sample)
    examples_per_second = FLOPS_PER_SECOND / max(6 * num_params, 1)
    return (f"{num_params:,} parameters ({weights_mb:,.0f} MB of float32 weights; a checkpoint with Adam's two "
            f"moments is about {3 * weights_mb:,.0f} MB; roughly {examples_per_second:,.0f} examples/s per CPU thread)")


def warn_if_large(model: nn.Module, what: str) -> None:
    """A UserWarning naming the size, speed and what makes it large, above ``LARGE_PARAMS`` parameters."""
    num_params = sum(p.numel() for p in model.parameters())
    if num_params > LARGE_PARAMS:
        warnings.warn(f"large model: {describe_size(model)}. {what}", UserWarning, stacklevel=3)
