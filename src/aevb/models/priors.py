"""Priors p(z). A prior is a module whose ``forward()`` returns a Distribution over z with
event shape (latent_dim,) and no batch dimensions. New priors (mixtures, VampPrior) are added
as a class plus a ``PRIORS`` entry; objectives only call ``log_prob`` (and ``kl_divergence``
when a closed form is registered)."""

from __future__ import annotations

import torch
from torch import nn
from torch.distributions import Distribution, Independent, Normal


class StandardNormalPrior(nn.Module):
    """p(z) = N(z; 0, I), the AEVB prior.

    Args:
        latent_dim: dimension D of z.
    """

    def __init__(self, latent_dim: int):
        super().__init__()
        self.latent_dim = latent_dim
        self.register_buffer("loc", torch.zeros(latent_dim), persistent=False)
        self.register_buffer("scale", torch.ones(latent_dim), persistent=False)

    def forward(self) -> Distribution:
        """Returns N(0, I) with event shape (D,)."""
        return Independent(Normal(self.loc, self.scale, validate_args=False), 1, validate_args=False)


PRIORS = {"standard_normal": StandardNormalPrior}
