"""Plain networks with no probability in them: they map tensors to tensors.

Encoders and decoders wrap these and turn their outputs into distributions.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from aevb.speed import gemm

ACTIVATIONS = {"tanh": nn.Tanh, "relu": nn.ReLU, "elu": nn.ELU, "softplus": nn.Softplus}
_FUSED = {nn.Tanh: "tanh", nn.ReLU: "relu"}  # activations a ``gemm.linear_module_forward`` product applies itself


def build_activation(name: str) -> nn.Module:
    """An activation module by name; raises ValueError naming the allowed names."""
    if name not in ACTIVATIONS:
        raise ValueError(f"unknown activation {name!r}; allowed: {', '.join(ACTIVATIONS)}")
    return ACTIVATIONS[name]()


class MLP(nn.Sequential):
    """Linear -> activation -> ... -> Linear; the last layer has no activation.

    Args:
        in_dim: input features.
        hidden: hidden layer sizes (may be empty: one linear map).
        out_dim: output features.
        activation: name in ``ACTIVATIONS``.
    """

    def __init__(self, in_dim: int, hidden: Sequence[int], out_dim: int, activation: str = "tanh"):
        layers: list[nn.Module] = []
        sizes = [in_dim, *hidden]
        for a, b in zip(sizes[:-1], sizes[1:]):
            layers += [nn.Linear(a, b), build_activation(activation)]
        layers.append(nn.Linear(sizes[-1], out_dim))
        super().__init__(*layers)

    @property
    def output_layer(self) -> nn.Linear:
        return self[-1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The layers in order; each Linear (with a tanh or ReLU after it) runs as one ``gemm`` product,
        on oneDNN where it applies (float32 on the CPU), the same function to float rounding.
        Exports and compilation see the plain ``nn.Sequential`` of torch's modules."""
        if gemm.capturing() or not gemm.uses_onednn(x):  # capturing first: no shape tests inside a trace
            return super().forward(x)
        mods, i = list(self), 0
        while i < len(mods):
            m = mods[i]
            if type(m) is nn.Linear:
                fused = _FUSED.get(type(mods[i + 1])) if i + 1 < len(mods) else None
                x = gemm.linear_module_forward(x, m.weight, m.bias, fused)
                i += 2 if fused else 1
            else:
                x = m(x)
                i += 1
        return x


def image_shape_for_conv(shape: Sequence[int]) -> tuple[int, int, int]:
    """(C, H, W) for a data shape of (H, W) or (C, H, W); raises for other shapes."""
    if len(shape) == 2:
        return (1, int(shape[0]), int(shape[1]))
    if len(shape) == 3:
        return tuple(int(s) for s in shape)  # type: ignore[return-value]
    raise ValueError(f"arch 'conv' needs image data of shape (H, W) or (C, H, W), got {tuple(shape)}; use arch 'mlp'")


class ConvEncoderNet(nn.Module):
    """Two stride-2 convolutions then an MLP head: flat x (..., C*H*W) -> (..., out_dim)."""

    def __init__(self, shape: Sequence[int], hidden: Sequence[int], out_dim: int, activation: str = "relu",
                 channels: Sequence[int] = (32, 64)):
        super().__init__()
        c, h, w = image_shape_for_conv(shape)
        self.image_shape = (c, h, w)
        layers: list[nn.Module] = []
        for c_out in channels:
            layers += [nn.Conv2d(c, c_out, kernel_size=4, stride=2, padding=1), build_activation(activation)]
            c, h, w = c_out, h // 2, w // 2
        self.conv = nn.Sequential(*layers)
        self.head = MLP(c * h * w, hidden, out_dim, activation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        lead = x.shape[:-1]
        h = self.conv(x.reshape(-1, *self.image_shape))
        return self.head(h.flatten(1)).reshape(*lead, -1)


class ConvDecoderNet(nn.Module):
    """Mirror of ConvEncoderNet: z (..., latent) -> (..., params_per_dim * C*H*W)."""

    def __init__(self, shape: Sequence[int], hidden: Sequence[int], latent_dim: int, params_per_dim: int,
                 activation: str = "relu", channels: Sequence[int] = (64, 32)):
        super().__init__()
        c, h, w = image_shape_for_conv(shape)
        self.out_shape = (params_per_dim * c, h, w)
        self.start = (channels[0], math.ceil(h / 4), math.ceil(w / 4))
        self.head = MLP(latent_dim, hidden, channels[0] * self.start[1] * self.start[2], activation)
        self.act = build_activation(activation)
        self.deconv = nn.Sequential(
            nn.ConvTranspose2d(channels[0], channels[1], kernel_size=4, stride=2, padding=1),
            build_activation(activation),
            nn.ConvTranspose2d(channels[1], params_per_dim * c, kernel_size=4, stride=2, padding=1),
        )
        self.bias = nn.Parameter(torch.zeros(params_per_dim * c * h * w))

    @property
    def output_bias(self) -> nn.Parameter:
        return self.bias

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        lead = z.shape[:-1]
        h = self.act(self.head(z.reshape(-1, z.shape[-1]))).reshape(-1, *self.start)
        out = self.deconv(h)[:, :, : self.out_shape[1], : self.out_shape[2]]
        return (out.flatten(1) + self.bias).reshape(*lead, -1)
