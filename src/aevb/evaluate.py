"""Evaluation: bounds on log p(x) over a whole split, batched, deterministic for a seed."""

from __future__ import annotations

import math

import torch

from .data import prepare_batch
from .objectives import elbo


@torch.no_grad()
def evaluate_elbo(model, x: torch.Tensor, *, binarization: str = "none", batch_size: int = 1000,
                  seed: int = 1234, num_samples: int = 1) -> dict:
    """Mean ELBO (analytic KL) over x with its standard error and its two terms, in nats per example.

    Dynamic binarization draws the pixels with a generator seeded by ``seed``, so two calls give
    the same numbers.

    Returns:
        {"n", "elbo", "elbo_se", "recon", "kl"}; ``elbo_se`` = std / sqrt(n).
    """
    g = torch.Generator(device=x.device).manual_seed(seed)
    torch_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    values, recons, kls = [], [], []
    try:
        for i in range(0, len(x), batch_size):
            xb = prepare_batch(x[i:i + batch_size], binarization, g)
            b = elbo(model, xb, num_samples=num_samples)
            values.append(b.value)
            recons.append(b.recon)
            kls.append(b.kl)
    finally:
        torch.random.set_rng_state(torch_state)
    v = torch.cat(values).double()
    n = v.numel()
    return {"n": n, "elbo": float(v.mean()), "elbo_se": float(v.std() / math.sqrt(n)) if n > 1 else 0.0,
            "recon": float(torch.cat(recons).double().mean()), "kl": float(torch.cat(kls).double().mean())}
