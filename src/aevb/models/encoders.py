"""Encoders q(z|x): networks whose outputs are the mean and log-variance of a diagonal Gaussian."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.distributions import Distribution, Independent, Normal

from aevb.models.nets import MLP, ConvEncoderNet


class GaussianEncoder(nn.Module):
    """q(z|x) = N(z; mu(x), diag(exp(log_var(x)))), AEVB appendix C.2.

    Args:
        net: maps x of shape (B, num_dims) to (B, 2 * latent_dim): mean then log-variance.
        latent_dim: dimension D of z.
    """

    export_outputs = ("mu", "log_var")  # what ``params`` returns, by name (aevb export)

    def __init__(self, net: nn.Module, latent_dim: int):
        super().__init__()
        self.net = net
        self.latent_dim = latent_dim

    def params(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns (mu, log_var), each (..., D) for x (..., in_dim)."""
        mu, log_var = self.net(x).chunk(2, dim=-1)
        return mu, log_var

    def forward(self, x: torch.Tensor) -> Distribution:
        """Returns q(z|x) with batch shape x.shape[:-1] (e.g. (B,)) and event shape (D,)."""
        mu, log_var = self.params(x)
        return Independent(Normal(mu, torch.exp(0.5 * log_var), validate_args=False), 1, validate_args=False)


def mlp_net(shape: Sequence[int], num_dims: int, out_dim: int, hidden: Sequence[int], activation: str) -> nn.Module:
    """x (B, num_dims) -> (B, out_dim) through an MLP."""
    return MLP(num_dims, hidden, out_dim, activation)


def conv_net(shape: Sequence[int], num_dims: int, out_dim: int, hidden: Sequence[int], activation: str) -> nn.Module:
    """x (B, num_dims) -> (B, out_dim) through two convolutions and an MLP head."""
    return ConvEncoderNet(shape, hidden, out_dim, activation)


ENCODER_NETS = {"mlp": mlp_net, "conv": conv_net}
"""Encoder networks by ``model.arch``: (shape, num_dims, out_dim, hidden, activation) -> module."""


def mlp_encoder(shape: Sequence[int], num_dims: int, latent_dim: int, hidden: Sequence[int],
                activation: str) -> GaussianEncoder:
    return GaussianEncoder(mlp_net(shape, num_dims, 2 * latent_dim, hidden, activation), latent_dim)


def conv_encoder(shape: Sequence[int], num_dims: int, latent_dim: int, hidden: Sequence[int],
                 activation: str) -> GaussianEncoder:
    return GaussianEncoder(conv_net(shape, num_dims, 2 * latent_dim, hidden, activation), latent_dim)


ENCODERS = {"mlp": mlp_encoder, "conv": conv_encoder}
