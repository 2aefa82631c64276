"""Mixtures of diagonal Gaussians as ``torch.distributions`` objects, and sampling with a generator.

``DiagonalGaussianMixture`` is a ``MixtureSameFamily`` of ``Independent(Normal)`` components,

    p(z) = sum_k pi_k N(z; mu_k, diag(s_k^2)),   pi = softmax(logits),

whose ``log_prob`` is computed without a (..., K, D) intermediate: with a_k = 1 / s_k^2,

    sum_d (z_d - mu_kd)^2 a_kd = (z * z) . a_k - 2 z . (mu_k a_k) + sum_d mu_kd^2 a_kd,

two (N, D) x (D, K) products in float64 (no cancellation worth a digit), then a log-sum-exp over k.
That keeps the K = 5000 evaluator's blocks of 2048 samples at (2048, K) memory for a 500-component
VampPrior. ``sample_with_generator`` draws exactly from a prior with an explicit ``torch.Generator``
(torch's own ``sample`` takes none).
"""

from __future__ import annotations

import math

import torch
from torch.distributions import Categorical, Distribution, Independent, MixtureSameFamily, Normal

LOG_2PI = math.log(2 * math.pi)


class DiagonalGaussianMixture(MixtureSameFamily):
    """p(z) = sum_k softmax(logits)_k N(z; loc_k, diag(scale_k^2)), event shape (D,), no batch dims.

    Args:
        logits: (K,) unnormalised log mixture weights.
        loc: (K, D) component means.
        scale: (K, D) component standard deviations (> 0).
    """

    def __init__(self, logits: torch.Tensor, loc: torch.Tensor, scale: torch.Tensor):
        components = Independent(Normal(loc, scale, validate_args=False), 1, validate_args=False)
        super().__init__(Categorical(logits=logits, validate_args=False), components, validate_args=False)

    @property
    def loc(self) -> torch.Tensor:
        """(K, D) component means."""
        return self.component_distribution.base_dist.loc

    @property
    def scale(self) -> torch.Tensor:
        """(K, D) component standard deviations."""
        return self.component_distribution.base_dist.scale

    def component_log_prob(self, z: torch.Tensor) -> torch.Tensor:
        """log N(z; loc_k, diag(scale_k^2)) for z (..., D). Returns (..., K), in nats, z's dtype."""
        work = torch.float32 if z.device.type == "mps" else torch.float64  # MPS has no float64
        flat = z.reshape(-1, z.shape[-1]).to(work)  # (N, D)
        loc, scale = self.loc.to(work), self.scale.to(work)
        precision = scale.pow(-2)  # (K, D)
        quadratic = (flat * flat) @ precision.T - 2 * flat @ (loc * precision).T \
            + (loc * loc * precision).sum(-1)  # (N, K)
        log_norm = -scale.log().sum(-1) - 0.5 * z.shape[-1] * LOG_2PI  # (K,)
        out = log_norm - 0.5 * quadratic.clamp_min(0)
        return out.to(z.dtype).reshape(*z.shape[:-1], -1)

    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        """log p(z) = logsumexp_k (log pi_k + log N(z; loc_k, diag(scale_k^2))) for z (..., D). Returns (...)."""
        log_pi = torch.log_softmax(self.mixture_distribution.logits, -1)  # (K,)
        return torch.logsumexp(self.component_log_prob(z) + log_pi, dim=-1)


def mixture_of(logits: torch.Tensor, components: Distribution) -> MixtureSameFamily:
    """sum_k softmax(logits)_k components_k: a ``DiagonalGaussianMixture`` when the components are
    ``Independent(Normal, 1)`` with batch shape (K,), else a plain ``MixtureSameFamily``."""
    if isinstance(components, Independent) and type(components.base_dist) is Normal \
            and components.reinterpreted_batch_ndims == 1:
        return DiagonalGaussianMixture(logits, components.base_dist.loc, components.base_dist.scale)
    return MixtureSameFamily(Categorical(logits=logits, validate_args=False), components, validate_args=False)


def sample_with_generator(dist: Distribution, num_samples: int, generator: torch.Generator | None) -> torch.Tensor:
    """num_samples exact draws from ``dist``, random only through ``generator``. Returns (num_samples, *batch, *event).

    A diagonal Gaussian is loc + scale * eps with eps ~ N(0, I) from the generator (the same numbers
    as ``rsample`` given that eps); a diagonal Gaussian mixture draws the component k ~ Categorical(pi)
    (``torch.multinomial``) and then loc_k + scale_k * eps (ancestral sampling). Any other
    distribution samples with torch's global generator reseeded from ``generator`` inside
    ``torch.random.fork_rng`` (so the global state is left untouched).
    """
    if isinstance(dist, Independent) and type(dist.base_dist) is Normal:
        loc, scale = dist.base_dist.loc, dist.base_dist.scale
        eps = torch.randn((num_samples, *loc.shape), generator=generator, device=loc.device, dtype=loc.dtype)
        return loc + scale * eps
    if isinstance(dist, DiagonalGaussianMixture):
        loc, scale = dist.loc, dist.scale  # (K, D)
        probs = dist.mixture_distribution.probs
        k = torch.multinomial(probs, num_samples, replacement=True, generator=generator)  # (n,)
        eps = torch.randn(num_samples, loc.shape[-1], generator=generator, device=loc.device, dtype=loc.dtype)
        return loc[k] + scale[k] * eps
    device = generator.device if generator is not None else torch.device("cpu")
    seed = int(torch.randint(0, 2**62, (), generator=generator, device=device))
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        return dist.sample((num_samples,))


def sample_components(p_z: DiagonalGaussianMixture, num_components: int, num_samples: int,
                      generator: torch.Generator | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Draws from each of the heaviest ``num_components`` components (ties: lowest index first).

    Returns:
        idx (C,) the components, heaviest first; z (C, num_samples, D), z[c] ~ N(loc_idx[c], diag scale^2).
    """
    probs = p_z.mixture_distribution.probs
    idx = torch.sort(-probs, stable=True).indices[:num_components]  # (C,)
    loc, scale = p_z.loc[idx], p_z.scale[idx]  # (C, D)
    eps = torch.randn(num_samples, *loc.shape, generator=generator, device=loc.device, dtype=loc.dtype)
    return idx, (loc + scale * eps).transpose(0, 1)
