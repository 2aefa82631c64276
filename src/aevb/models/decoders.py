"""Decoders: z with any leading sample dims (K, B, D) -> likelihood parameters (K, B, P * num_dims).

P is the likelihood's ``params_per_dim``; the likelihood turns the parameters into p(x|z)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from aevb.models.nets import MLP, ConvDecoderNet


class Decoder(nn.Module):
    """A network from z to the parameters of p(x|z).

    Args:
        net: maps (..., latent_dim) to (..., num_params).
    """

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    @property
    def output_bias(self) -> torch.Tensor:
        """The bias added last, shape (num_params,): set from the data mean at initialisation."""
        if hasattr(self.net, "output_bias"):
            return self.net.output_bias
        return self.net.output_layer.bias

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z)


def mlp_decoder(shape: Sequence[int], num_params: int, params_per_dim: int, latent_dim: int,
                hidden: Sequence[int], activation: str) -> Decoder:
    return Decoder(MLP(latent_dim, list(reversed(hidden)), num_params, activation))


def conv_decoder(shape: Sequence[int], num_params: int, params_per_dim: int, latent_dim: int,
                 hidden: Sequence[int], activation: str) -> Decoder:
    return Decoder(ConvDecoderNet(shape, list(reversed(hidden)), latent_dim, params_per_dim, activation))


DECODERS = {"mlp": mlp_decoder, "conv": conv_decoder}
