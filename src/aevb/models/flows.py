"""Normalizing-flow transforms for q(z|x): ``torch.distributions.Transform`` subclasses with exact
log-determinants, used inside a ``TransformedDistribution`` over a Gaussian base.

Both transforms take *per-example* parameters: tensors with batch shape (B, ...) that broadcast
against samples z of shape (K, B, D) (sample dims first), so one transform object serves every
sample of a batch. Each is bijective; ``log_abs_det_jacobian(z, y)`` returns log |det dy/dz| with
shape z.shape[:-1] (event dim 1 summed), in nats. ``cache_size=1`` keeps the last (z, y) pair, so
``q_z.log_prob(q_z.rsample())`` does not invert the flow; ``log_prob`` of any other z inverts it
exactly (planar: a monotone scalar equation solved by bisection, with the implicit-function
gradient; IAF: D passes of its autoregressive network).

References:
    Rezende & Mohamed (2015), Variational Inference with Normalizing Flows, eqs. 10-12, appendix A.
    Kingma, Salimans, Jozefowicz, Chen, Sutskever & Welling (2016), Improved Variational Inference
    with Inverse Autoregressive Flow, eqs. 10-15.
    Germain, Gregor, Murray & Larochelle (2015), MADE: Masked Autoencoder for Distribution Estimation.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.distributions import Transform, constraints

from aevb.models.nets import build_activation

BISECTION_STEPS = 60  # halves the bracket [w.y - |c|, w.y + |c|] to float64 resolution for |c| < 1e3


def constrain_planar_u(u: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """u_hat = u + (m(w.u) - w.u) w / |w|^2 with m(a) = -1 + softplus(a), so that w.u_hat = m(w.u) > -1
    and the planar map is invertible (Rezende & Mohamed 2015, appendix A.1). u, w: (..., D)."""
    wu = (w * u).sum(-1, keepdim=True)
    m = -1 + F.softplus(wu)
    return u + (m - wu) * w / w.square().sum(-1, keepdim=True).clamp_min(1e-12)


class PlanarTransform(Transform):
    """y = z + u_hat tanh(w.z + b), log |det dy/dz| = log(1 + tanh'(w.z + b) w.u_hat).

    Args:
        u: (B, D) raw direction; constrained to u_hat with w.u_hat > -1 (``constrain_planar_u``).
        w: (B, D).
        b: (B,).
        cache_size: 0 or 1, as in ``torch.distributions.Transform``.
    """

    domain = constraints.independent(constraints.real, 1)
    codomain = constraints.independent(constraints.real, 1)
    bijective = True

    def __init__(self, u: torch.Tensor, w: torch.Tensor, b: torch.Tensor, cache_size: int = 1):
        super().__init__(cache_size=cache_size)
        self.u_hat = constrain_planar_u(u, w)  # (B, D)
        self.w, self.b = w, b  # (B, D), (B,)

    def _call(self, z: torch.Tensor) -> torch.Tensor:
        a = (self.w * z).sum(-1) + self.b  # (K, B)
        return z + self.u_hat * torch.tanh(a)[..., None]

    def _inverse(self, y: torch.Tensor) -> torch.Tensor:
        """z = y - u_hat tanh(alpha + b), where alpha = w.z solves g(alpha) = alpha + c tanh(alpha + b) - w.y = 0
        with c = w.u_hat > -1 (g is increasing). Bisection without gradients, then one Newton step that
        carries the implicit-function gradient d alpha = -dg / g'(alpha)."""
        c = (self.w * self.u_hat).sum(-1)  # (B,)
        wy = (self.w * y).sum(-1)  # (K, B)
        with torch.no_grad():
            c64, wy64, b64 = c.double(), wy.double(), self.b.double()
            lo, hi = wy64 - c64.abs(), wy64 + c64.abs()
            for _ in range(BISECTION_STEPS):
                mid = 0.5 * (lo + hi)
                below = mid + c64 * torch.tanh(mid + b64) - wy64 < 0
                lo, hi = torch.where(below, mid, lo), torch.where(below, hi, mid)
            alpha0 = (0.5 * (lo + hi)).to(y.dtype)
        t = torch.tanh(alpha0 + self.b)
        alpha = alpha0 - (alpha0 + c * t - wy) / (1 + c * (1 - t.square()))
        return y - self.u_hat * torch.tanh(alpha + self.b)[..., None]

    def log_abs_det_jacobian(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        t = torch.tanh((self.w * z).sum(-1) + self.b)  # (K, B)
        c = (self.w * self.u_hat).sum(-1)  # (B,)
        return torch.log1p(c * (1 - t.square()))


class MaskedLinear(nn.Linear):
    """y = x (W * mask)^T + b, with a fixed 0/1 mask of shape (out_features, in_features)."""

    def __init__(self, mask: torch.Tensor):
        super().__init__(mask.shape[1], mask.shape[0])
        self.register_buffer("mask", mask.to(self.weight.dtype), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight * self.mask, self.bias)


def made_degrees(latent_dim: int, hidden: Sequence[int], reverse: bool) -> list[torch.Tensor]:
    """MADE degrees: inputs 1..D (reversed if ``reverse``), hidden units cycling over 1..D-1 (0 for D = 1)."""
    inputs = torch.arange(1, latent_dim + 1)
    degrees = [inputs.flip(0) if reverse else inputs]
    for h in hidden:
        degrees.append(torch.arange(h) % max(latent_dim - 1, 1) + 1 if latent_dim > 1 else torch.zeros(h, dtype=torch.long))
    return degrees


class MADE(nn.Module):
    """Masked autoregressive network: z (K, B, D) and context h (B, C) -> (m, s), each (K, B, D), where
    output d depends only on the inputs that come before d in the ordering (and on h).

    Args:
        latent_dim: D.
        hidden: hidden layer sizes (at least D - 1 units each to connect every input).
        context_dim: C, size of the per-example context h added to the first layer (0: none).
        reverse: order the inputs D..1 instead of 1..D (alternated between IAF steps).
        activation: name in ``nets.ACTIVATIONS``.
        gate_bias: initial value of s, so that sigmoid(s) starts near 1 (IAF's "forget gate" bias).
    """

    def __init__(self, latent_dim: int, hidden: Sequence[int], context_dim: int = 0, reverse: bool = False,
                 activation: str = "elu", gate_bias: float = 2.0):
        super().__init__()
        degrees = made_degrees(latent_dim, hidden, reverse)
        self.order = degrees[0]  # (D,) position of each input in the autoregressive order, 1-based
        layers = [MaskedLinear((d_out[:, None] >= d_in[None, :]).long()) for d_in, d_out in zip(degrees[:-1], degrees[1:])]
        out_degrees = degrees[0].repeat(2)  # m then s
        layers.append(MaskedLinear((out_degrees[:, None] > degrees[-1][None, :]).long()))
        self.layers = nn.ModuleList(layers)
        self.act = build_activation(activation)
        first_width = hidden[0] if hidden else 2 * latent_dim
        self.context = nn.Linear(context_dim, first_width, bias=False) if context_dim else None
        with torch.no_grad():
            self.layers[-1].weight.mul_(0.01)
            self.layers[-1].bias.zero_()
            self.layers[-1].bias[latent_dim:] = gate_bias

    def forward(self, z: torch.Tensor, h: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        a = self.layers[0](z)
        if self.context is not None:
            a = a + self.context(h)  # (B, H) broadcasts over the sample dims
        for layer in self.layers[1:]:
            a = layer(self.act(a))
        m, s = a.chunk(2, dim=-1)
        return m, s


class InverseAutoregressiveTransform(Transform):
    """One IAF step: [m, s] = MADE(z, h), sigma = sigmoid(s), y = sigma * z + (1 - sigma) * m;
    log |det dy/dz| = sum_d log sigma_d (the Jacobian is triangular in the MADE's order).

    Args:
        made: the step's ``MADE`` (its parameters are the encoder's, shared by all examples).
        context: (B, C) per-example context h from the encoder, or None.
        cache_size: 0 or 1.
    """

    domain = constraints.independent(constraints.real, 1)
    codomain = constraints.independent(constraints.real, 1)
    bijective = True

    def __init__(self, made: MADE, context: torch.Tensor | None = None, cache_size: int = 1):
        super().__init__(cache_size=cache_size)
        self.made, self.context = made, context
        self._saved: tuple[torch.Tensor, torch.Tensor] | None = None  # (z, log sigma) of the last forward

    def _gate(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        m, s = self.made(z, self.context)
        return m, s

    def _call(self, z: torch.Tensor) -> torch.Tensor:
        m, s = self._gate(z)
        sigma = torch.sigmoid(s)
        self._saved = (z, F.logsigmoid(s))
        return sigma * z + (1 - sigma) * m

    def _inverse(self, y: torch.Tensor) -> torch.Tensor:
        """z_d = (y_d - (1 - sigma_d) m_d) / sigma_d, with (m, s) from the z_{<d} found so far: D passes."""
        z = torch.zeros_like(y)
        for _ in range(y.shape[-1]):
            m, s = self._gate(z)
            sigma = torch.sigmoid(s)
            z = (y - (1 - sigma) * m) / sigma
        return z

    def log_abs_det_jacobian(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if self._saved is not None and self._saved[0] is z:
            log_sigma = self._saved[1]
        else:
            log_sigma = F.logsigmoid(self._gate(z)[1])
        return log_sigma.sum(-1)
