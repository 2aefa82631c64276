"""Discretized logistic likelihoods p(x|z) for 8-bit data: one logistic, or a mixture of K, per dimension.

Data are integer levels k in 0..L-1 (L = 256), placed on [-1, 1] at c_k = 2k/(L-1) - 1; bin k is
[c_k - h, c_k + h] with h = 1/(L-1). A continuous logistic(m, s) is discretized by its mass in
the bin, with the edge bins taking the tails (PixelCNN++):

  P(0) = sigmoid((c_0 + h - m)/s),  P(L-1) = 1 - sigmoid((c_{L-1} - h - m)/s),
  P(k) = sigmoid(b) - sigmoid(a),   a = (c_k - h - m)/s, b = (c_k + h - m)/s.

The interior mass is computed without cancellation from the identity
sigmoid(b) - sigmoid(a) = sigmoid(b) sigmoid(-a) (1 - e^(a - b)), so
log P(k) = logsigmoid(b) + logsigmoid(-a) + log(-expm1(-2h/s)), exact for any s. The L masses sum
to 1. log p(x|z) sums over dimensions, in nats per example; bits/dim = -log p / (D ln 2), as for
the categorical likelihood.

References: Salimans, Karpathy, Chen & Kingma (2017), PixelCNN++, section 2.1.
"""

from __future__ import annotations

from typing import ClassVar

import torch
import torch.nn.functional as F
from torch.distributions import (
    Categorical,
    Distribution,
    Independent,
    MixtureSameFamily,
    constraints,
)

from aevb.models.likelihoods import Likelihood, check_integer_levels

LOG_SCALE_MIN = -7.0  # s >= e^-7 ~ 1e-3, an eighth of a bin: PixelCNN++'s floor


class DiscretizedLogistic(Distribution):
    """P(X = k), k in 0..L-1: the logistic(loc, scale) mass of bin k on [-1, 1] (module docstring).

    Args:
        loc: (...) location m on the [-1, 1] scale.
        scale: (...) positive scale s.
        num_levels: L.
    """

    arg_constraints: ClassVar[dict] = {"loc": constraints.real, "scale": constraints.positive}
    has_rsample = False

    def __init__(self, loc: torch.Tensor, scale: torch.Tensor, num_levels: int = 256):
        self.loc, self.scale = torch.broadcast_tensors(loc, scale)
        self.num_levels = int(num_levels)
        super().__init__(self.loc.shape, torch.Size(), validate_args=False)

    @property
    def support(self):
        return constraints.integer_interval(0, self.num_levels - 1)

    def expand(self, batch_shape, _instance=None):
        shape = torch.Size(batch_shape)
        return DiscretizedLogistic(self.loc.expand(shape), self.scale.expand(shape), self.num_levels)

    def centre(self, k: torch.Tensor) -> torch.Tensor:
        """c_k = 2k/(L-1) - 1: level k on the [-1, 1] scale."""
        return 2 * k / (self.num_levels - 1) - 1

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        h = 1.0 / (self.num_levels - 1)
        c = self.centre(value)
        a = (c - h - self.loc) / self.scale
        b = (c + h - self.loc) / self.scale
        interior = F.logsigmoid(b) + F.logsigmoid(-a) + torch.log(-torch.expm1(-2 * h / self.scale))
        lowest, highest = F.logsigmoid(b), F.logsigmoid(-a)
        return torch.where(value <= 0, lowest, torch.where(value >= self.num_levels - 1, highest, interior))

    def cdf_above(self, k: int) -> torch.Tensor:
        """P(X > k) = 1 - sigmoid((c_k + h - m)/s) for a level k < L-1."""
        edge = 2 * k / (self.num_levels - 1) - 1 + 1.0 / (self.num_levels - 1)
        return torch.sigmoid((self.loc - edge) / self.scale)

    @property
    def mean(self) -> torch.Tensor:
        """E[X] = sum_{k=0}^{L-2} P(X > k), in levels."""
        total = torch.zeros_like(self.loc)
        for k in range(self.num_levels - 1):
            total = total + self.cdf_above(k)
        return total

    def sample(self, sample_shape=()) -> torch.Tensor:
        """Inverse CDF of the logistic, then the level whose bin holds the draw."""
        with torch.no_grad():
            shape = self._extended_shape(sample_shape)
            u = torch.rand(shape, dtype=self.loc.dtype, device=self.loc.device).clamp(1e-6, 1 - 1e-6)
            y = self.loc + self.scale * (torch.log(u) - torch.log1p(-u))
            return torch.round((y + 1) * (self.num_levels - 1) / 2).clamp(0, self.num_levels - 1)


class DiscretizedLogisticLikelihood(Likelihood):
    """p(x|z) = prod_d DiscretizedLogistic(x_d; m_d, s_d) over the levels 0..L-1 (PixelCNN++ bins).

    The decoder emits two blocks of D numbers: m (location on [-1, 1]) and log s (floored at -7).
    The data are integer levels (``wants_integer_levels``), like the categorical likelihood,
    with D * 2 outputs instead of D * 256. ``mean`` is E[x|z] in levels.
    """

    supports = ("8bit", "integer")
    discrete = True
    wants_integer_levels = True
    num_components = 1

    def __init__(self, num_dims: int, num_levels: int = 256, num_components: int = 1):
        super().__init__(num_dims)
        self.num_levels = int(num_levels)
        self.num_components = int(num_components)
        self.params_per_dim = 2 if type(self) is DiscretizedLogisticLikelihood else 3 * self.num_components

    @classmethod
    def from_config(cls, model_cfg, info) -> DiscretizedLogisticLikelihood:
        return cls(info.num_dims, getattr(info, "levels", None) or 256)

    def components(self, params: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(mixture logits, loc, scale), each (..., D, K), from decoder outputs (..., P * D)."""
        blocks = params.unflatten(-1, (self.params_per_dim, self.num_dims)).movedim(-2, -1)  # (..., D, P)
        if self.params_per_dim == 2:
            logits = torch.zeros_like(blocks[..., :1])
            loc, log_scale = blocks[..., :1], blocks[..., 1:]
        else:
            logits, loc, log_scale = blocks.chunk(3, dim=-1)
        return logits, loc, torch.exp(log_scale.clamp_min(LOG_SCALE_MIN))

    def forward(self, params: torch.Tensor) -> Distribution:
        logits, loc, scale = self.components(params)
        if self.params_per_dim == 2:
            return Independent(DiscretizedLogistic(loc[..., 0], scale[..., 0], self.num_levels), 1, validate_args=False)
        mixture = MixtureSameFamily(Categorical(logits=logits, validate_args=False),
                                    DiscretizedLogistic(loc, scale, self.num_levels), validate_args=False)
        return Independent(mixture, 1, validate_args=False)

    def check_data(self, x: torch.Tensor, where: str = "data") -> None:
        super().check_data(x, where)
        check_integer_levels(x, self.num_levels, where, "discretized logistic",
                             "Keep 8-bit data as integer levels (do not scale to [0, 1] or dequantize), or choose a "
                             "continuous likelihood for continuous values.")

    def init_output_bias(self, bias: torch.Tensor, data_mean: torch.Tensor) -> None:
        """Locations at the data mean (components spread by +-0.2 around it), log s = log 0.1, equal weights."""
        loc = (2 * data_mean / (self.num_levels - 1) - 1).clamp(-1, 1)
        k = self.num_components
        offsets = torch.linspace(-0.2, 0.2, k) if k > 1 else torch.zeros(1)
        D = self.num_dims
        with torch.no_grad():
            blocks = bias.view(self.params_per_dim, D)
            first_loc = 0 if self.params_per_dim == 2 else k
            for i in range(k):
                blocks[first_loc + i].copy_(loc + offsets[i])
                blocks[first_loc + k + i].fill_(-2.3)
            if self.params_per_dim != 2:
                blocks[:k].zero_()


class DiscretizedLogisticMixtureLikelihood(DiscretizedLogisticLikelihood):
    """p(x|z) = prod_d sum_k pi_dk DiscretizedLogistic(x_d; m_dk, s_dk): K components per dimension.

    ``torch.distributions.MixtureSameFamily`` over K (``model.num_mixtures``) discretized
    logistics (log-sum-exp of log pi + log P). Decoder blocks of K*D numbers each: mixture
    logits, locations, log scales; unlike PixelCNN++ the colour channels of a pixel are not
    coupled (every dimension is its own mixture given z).
    """

    @classmethod
    def from_config(cls, model_cfg, info) -> DiscretizedLogisticMixtureLikelihood:
        return cls(info.num_dims, getattr(info, "levels", None) or 256, getattr(model_cfg, "num_mixtures", 5))
