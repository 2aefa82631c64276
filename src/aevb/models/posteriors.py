"""Posterior families q(z|x), each a ``torch.distributions.Distribution`` built from the encoder's output.

An encoder is a network x (B, num_dims) -> (B, P) followed by a *family* module that turns those P
numbers per example into q(z|x) with batch shape (B,) and event shape (D,):

- ``gaussian``: N(mu, diag(sigma^2)), P = 2D (``encoders.GaussianEncoder``, AEVB appendix C.2);
- ``full_covariance``: N(mu, L L^T) with L lower triangular, positive diagonal exp(l_dd),
  P = 2D + D(D-1)/2; ``torch.distributions.MultivariateNormal(scale_tril=L)``;
- ``planar``: K planar maps on top of the diagonal Gaussian, each with per-example (u, w, b),
  P = 2D + K(2D + 1) (Rezende & Mohamed 2015);
- ``iaf``: K inverse autoregressive steps (MADE networks shared by all x) on top of the diagonal
  Gaussian, with a per-example context h of C numbers, P = 2D + C (Kingma et al. 2016).

Flows are ``TransformedDistribution(base, transforms)``: log q(z|x) = log q_0(z_0|x) - sum_k log |det
dz_k/dz_{k-1}|, exact. Closed forms are extras: the full-covariance KL to a diagonal Gaussian prior is
registered with ``register_kl`` below; flows have no closed-form KL (use objective.kl = mc) and no
closed-form mean (``VAE.posterior_moments`` averages samples).

References:
    Kingma & Welling (2014), Auto-Encoding Variational Bayes, appendix C.2.
    Rezende & Mohamed (2015), Variational Inference with Normalizing Flows, section 4.1.
    Kingma et al. (2016), Improved Variational Inference with Inverse Autoregressive Flow, section 4.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn
from torch.distributions import (
    Distribution,
    Independent,
    MultivariateNormal,
    Normal,
    TransformedDistribution,
    register_kl,
)

from aevb.models.encoders import ENCODER_NETS, GaussianEncoder
from aevb.models.flows import MADE, InverseAutoregressiveTransform, PlanarTransform


def diagonal_gaussian(mu: torch.Tensor, log_var: torch.Tensor) -> Independent:
    """N(mu, diag(exp(log_var))) with batch shape (B,) and event shape (D,)."""
    return Independent(Normal(mu, torch.exp(0.5 * log_var), validate_args=False), 1, validate_args=False)


class FullCovariancePosterior(nn.Module):
    """(B, 2D + D(D-1)/2) -> N(mu, L L^T): mu, the log of L's diagonal, then L's strictly lower entries
    row by row (``torch.tril_indices(D, D, -1)`` order).

    Args:
        latent_dim: D.
    """

    def __init__(self, latent_dim: int):
        super().__init__()
        self.latent_dim = latent_dim
        rows, cols = torch.tril_indices(latent_dim, latent_dim, -1)
        self.register_buffer("lower_index", rows * latent_dim + cols, persistent=False)
        self.register_buffer("diag_index", torch.arange(latent_dim) * (latent_dim + 1), persistent=False)
        self.num_params = 2 * latent_dim + len(rows)

    def forward(self, params: torch.Tensor) -> MultivariateNormal:
        d = self.latent_dim
        mu, log_diag, lower = params[..., :d], params[..., d:2 * d], params[..., 2 * d:]
        flat = params.new_zeros(*params.shape[:-1], d * d)
        flat = flat.index_copy(-1, self.diag_index, torch.exp(log_diag)).index_copy(-1, self.lower_index, lower)
        return MultivariateNormal(mu, scale_tril=flat.reshape(*params.shape[:-1], d, d), validate_args=False)


class PlanarFlowPosterior(nn.Module):
    """(B, 2D + K(2D + 1)) -> K planar maps of N(mu, diag(exp(log_var))): mu, log_var, then per step u, w, b.

    Args:
        latent_dim: D.
        num_steps: K.
    """

    def __init__(self, latent_dim: int, num_steps: int):
        super().__init__()
        self.latent_dim, self.num_steps = latent_dim, num_steps
        self.num_params = 2 * latent_dim + num_steps * (2 * latent_dim + 1)

    def forward(self, params: torch.Tensor) -> TransformedDistribution:
        d = self.latent_dim
        base = diagonal_gaussian(params[..., :d], params[..., d:2 * d])
        steps = params[..., 2 * d:].unflatten(-1, (self.num_steps, 2 * d + 1))  # (B, K, 2D + 1)
        transforms = [PlanarTransform(steps[..., k, :d], steps[..., k, d:2 * d], steps[..., k, 2 * d])
                      for k in range(self.num_steps)]
        return TransformedDistribution(base, transforms, validate_args=False)


class InverseAutoregressiveFlowPosterior(nn.Module):
    """(B, 2D + C) -> K IAF steps of N(mu, diag(exp(log_var))): mu, log_var, then the context h.

    Args:
        latent_dim: D.
        num_steps: K; step k orders the latent dims 1..D for even k and D..1 for odd k.
        hidden: hidden sizes of each step's MADE.
        context_dim: C (0: the steps see z only).
        activation: the MADEs' hidden activation.
    """

    def __init__(self, latent_dim: int, num_steps: int, hidden: Sequence[int], context_dim: int,
                 activation: str = "elu"):
        super().__init__()
        self.latent_dim, self.context_dim = latent_dim, context_dim
        self.steps = nn.ModuleList(MADE(latent_dim, hidden, context_dim, reverse=k % 2 == 1, activation=activation)
                                   for k in range(num_steps))
        self.num_params = 2 * latent_dim + context_dim

    def forward(self, params: torch.Tensor) -> TransformedDistribution:
        d = self.latent_dim
        base = diagonal_gaussian(params[..., :d], params[..., d:2 * d])
        h = params[..., 2 * d:] if self.context_dim else None
        transforms = [InverseAutoregressiveTransform(made, h) for made in self.steps]
        return TransformedDistribution(base, transforms, validate_args=False)


class PosteriorEncoder(nn.Module):
    """q(z|x) = family(net(x)): a network with P outputs and a posterior family.

    Args:
        net: maps x (B, num_dims) to (B, family.num_params).
        family: module mapping those parameters to q(z|x) (batch (B,), event (D,)).
    """

    def __init__(self, net: nn.Module, family: nn.Module):
        super().__init__()
        self.net, self.family = net, family

    export_outputs = ("q_params",)  # aevb export: the family's P numbers per example, laid out as its docstring says

    def params(self, x: torch.Tensor) -> tuple[torch.Tensor]:
        """(net(x),): the (B, P) parameters the family turns into q(z|x) (what ``aevb export`` writes)."""
        return (self.net(x),)

    @property
    def latent_dim(self) -> int:
        return self.family.latent_dim

    def forward(self, x: torch.Tensor) -> Distribution:
        return self.family(self.net(x))


def _family(model_cfg) -> nn.Module:
    d, k = model_cfg.latent_dim, model_cfg.flow_steps
    if model_cfg.posterior == "full_covariance":
        return FullCovariancePosterior(d)
    if model_cfg.posterior == "planar":
        return PlanarFlowPosterior(d, k)
    return InverseAutoregressiveFlowPosterior(d, k, model_cfg.flow_hidden, model_cfg.flow_context_dim,
                                              model_cfg.activation)


def build_encoder(model_cfg, info) -> nn.Module:
    """The encoder q(z|x) that ``model_cfg.posterior`` names, over the ``model_cfg.arch`` network."""
    if model_cfg.posterior not in POSTERIORS:
        raise ValueError(f"unknown posterior {model_cfg.posterior!r}; allowed: {', '.join(POSTERIORS)}")
    if model_cfg.arch not in ENCODER_NETS:
        raise ValueError(f"unknown arch {model_cfg.arch!r}; allowed: {', '.join(ENCODER_NETS)}")
    net = ENCODER_NETS[model_cfg.arch]
    if model_cfg.posterior == "gaussian":
        return GaussianEncoder(net(info.shape, info.num_dims, 2 * model_cfg.latent_dim, model_cfg.hidden,
                                   model_cfg.activation), model_cfg.latent_dim)
    family = _family(model_cfg)
    return PosteriorEncoder(net(info.shape, info.num_dims, family.num_params, model_cfg.hidden, model_cfg.activation),
                            family)


POSTERIORS = {
    "gaussian": "diagonal Gaussian N(mu, diag(sigma^2)) (AEVB)",
    "full_covariance": "Gaussian N(mu, L L^T) with a Cholesky factor L from the encoder",
    "planar": "model.flow_steps planar flows on the diagonal Gaussian (Rezende & Mohamed 2015)",
    "iaf": "model.flow_steps inverse autoregressive flow steps with MADE networks (Kingma et al. 2016)",
}
"""Registered posterior families: config value -> one-line description."""

CLOSED_FORM_KL = ("gaussian", "full_covariance")
"""Families with a closed-form KL to the N(0, I) prior (objective.kl = analytic allowed)."""


# -- noise, means and closed forms ------------------------------------------------------------------

def rsample_and_log_prob(q_z: Distribution, eps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(z, log q(z|x)) for the reparameterised draw z = g(eps), eps ~ N(0, I) of shape sample_shape + (B, D),
    with log q from the noise: log q(z) = log N(eps; 0, I) - log |det dz/deps|, in nats, shape
    sample_shape + (B,). The same numbers as ``rsample_from_noise`` then ``q_z.log_prob``, without
    inverting anything (no triangular solve for full covariance, so it exports to ONNX as well).

    Diagonal Gaussian: log |det| = sum_d log sigma_d; full covariance: sum_d log L_dd; a flow adds each
    step's ``log_abs_det_jacobian``.
    """
    log_n = -0.5 * eps.square().sum(-1) - 0.5 * eps.shape[-1] * math.log(2 * math.pi)
    if isinstance(q_z, Independent) and isinstance(q_z.base_dist, Normal):
        return q_z.base_dist.loc + q_z.base_dist.scale * eps, log_n - q_z.base_dist.scale.log().sum(-1)
    if isinstance(q_z, MultivariateNormal):
        log_det = torch.diagonal(q_z.scale_tril, dim1=-2, dim2=-1).log().sum(-1)
        return q_z.loc + (q_z.scale_tril @ eps.unsqueeze(-1)).squeeze(-1), log_n - log_det
    if isinstance(q_z, TransformedDistribution):
        z, log_q = rsample_and_log_prob(q_z.base_dist, eps)
        for transform in q_z.transforms:
            y = transform(z)
            log_q = log_q - transform.log_abs_det_jacobian(z, y)
            z = y
        return z, log_q
    raise TypeError(f"no reparameterisation from standard-normal noise for {type(q_z).__name__}")


@register_kl(MultivariateNormal, Independent)
def _kl_full_covariance_diagonal_normal(q: MultivariateNormal, p: Independent) -> torch.Tensor:
    """KL(N(mu, S) || N(m, diag(s^2))) = 1/2 [sum_d (S_dd + (mu_d - m_d)^2) / s_d^2 - D
    + sum_d log s_d^2 - log det S], with S = L L^T, log det S = 2 sum_d log L_dd. Returns batch shape, nats."""
    if not isinstance(p.base_dist, Normal) or p.reinterpreted_batch_ndims != 1:
        raise NotImplementedError
    var_p = p.base_dist.scale.square()
    tril = q.scale_tril
    var_q = tril.square().sum(-1)  # S_dd = sum_j L_dj^2
    log_det_q = 2 * torch.diagonal(tril, dim1=-2, dim2=-1).log().sum(-1)
    quad = ((var_q + (q.loc - p.base_dist.loc).square()) / var_p).sum(-1)
    return 0.5 * (quad - q.loc.shape[-1] + var_p.log().sum(-1) - log_det_q)
