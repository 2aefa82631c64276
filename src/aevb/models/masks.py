"""Observation masks (``data.missing = "mask"``): NaN entries of x are unobserved.

With a mask m_d = 1 where x_d is observed (finite) and 0 where it is NaN:

- the likelihood is that of the observed entries only: log p(x_obs|z) = sum_d m_d log p(x_d|z)
  (every likelihood here factorises over d given z, so this is the exact marginal of the
  unobserved entries; ``MaskedLikelihood``);
- the encoder sees the zero-filled data and the mask, concatenated: q(z | [x * m, m])
  (``MaskedEncoder``), so every reported bound is on log p(x_obs), in nats per example.

Both wrap the unmasked module; the VAE and everything downstream are unchanged.

References: Mattei & Frellsen (2019), MIWAE: Deep generative modelling and imputation of
incomplete data sets, ICML (sections 2-3).
"""

from __future__ import annotations

import dataclasses

import torch
from torch import nn
from torch.distributions import Distribution, Independent, constraints

from aevb.models.likelihoods import DataMismatchError, Likelihood, first_bad


def observed(x: torch.Tensor) -> torch.Tensor:
    """The mask m: True where x is observed (not NaN). Same shape as x."""
    return ~torch.isnan(x)


def zero_filled(x: torch.Tensor) -> torch.Tensor:
    """x with its unobserved (NaN) entries set to 0."""
    return torch.where(torch.isnan(x), torch.zeros_like(x), x)


def log_prob_per_dim(p_x: Distribution, x: torch.Tensor) -> torch.Tensor:
    """log p(x_d|z) for each dimension d, (..., D): the terms that p_x.log_prob(x) sums."""
    if isinstance(p_x, Independent) and p_x.reinterpreted_batch_ndims == 1:
        return p_x.base_dist.log_prob(x)
    per_dim = getattr(p_x, "log_prob_per_dim", None)
    if per_dim is None:
        raise TypeError(f"{type(p_x).__name__} does not factorise over dimensions; it cannot be masked")
    return per_dim(x)


class MaskedDistribution(Distribution):
    """p(x_obs|z): ``log_prob(x)`` sums log p(x_d|z) over the observed (non-NaN) d of x; the rest as p_x."""

    arg_constraints: dict = {}
    has_rsample = False

    def __init__(self, p_x: Distribution):
        self.p_x = p_x
        super().__init__(p_x.batch_shape, p_x.event_shape, validate_args=False)

    @property
    def support(self):
        return constraints.real

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        m = observed(x)
        terms = log_prob_per_dim(self.p_x, zero_filled(x))  # (..., D)
        return torch.where(m, terms, torch.zeros_like(terms)).sum(-1)

    @property
    def mean(self) -> torch.Tensor:
        return self.p_x.mean

    def sample(self, sample_shape=()) -> torch.Tensor:
        return self.p_x.sample(sample_shape)


class MaskedLikelihood(Likelihood):
    """p(x_obs|z) = prod_{d observed} p(x_d|z) for any factorising likelihood (module docstring)."""

    def __init__(self, inner: Likelihood):
        super().__init__(inner.num_dims)
        self.inner = inner
        self.params_per_dim = inner.params_per_dim
        self.supports, self.discrete = inner.supports, inner.discrete
        self.wants_integer_levels = inner.wants_integer_levels
        self.num_levels = getattr(inner, "num_levels", None)

    def forward(self, params: torch.Tensor) -> Distribution:
        return MaskedDistribution(self.inner(params))

    def mean(self, params: torch.Tensor) -> torch.Tensor:
        return self.inner.mean(params)

    def check_data(self, x: torch.Tensor, where: str = "data") -> None:
        """inf is refused (NaN = unobserved); the observed values must fit the inner likelihood."""
        found = first_bad(x, torch.isinf(x))
        if found:
            i, j, value = found
            raise DataMismatchError(f"{where}: example {i}, dimension {j} is {value}; inf is not data (NaN marks "
                                    "a missing entry under data.missing = mask)")
        self.inner.check_data(zero_filled(x), where)

    def init_output_bias(self, bias: torch.Tensor, data_mean: torch.Tensor) -> None:
        """As the inner likelihood, with the mean over the observed entries (NaN-free)."""
        self.inner.init_output_bias(bias, torch.nan_to_num(data_mean, nan=0.0))

    def init_from_data(self, bias: torch.Tensor, x: torch.Tensor, latent_dim: int) -> None:
        """The inner likelihood's start from the complete rows of x when there are enough of them
        (more than latent_dim), else from the mean of the observed entries of each column."""
        complete = x[~torch.isnan(x).any(1)]
        if len(complete) > max(1, latent_dim):
            self.inner.init_from_data(bias, complete, latent_dim)
        else:
            self.init_output_bias(bias, x.nanmean(0))


class MaskedEncoder(nn.Module):
    """q(z | [x * m, m]): the inner encoder, built for 2 * num_dims inputs, sees the zero-filled x and the mask."""

    def __init__(self, inner: nn.Module):
        super().__init__()
        self.inner = inner

    @property
    def latent_dim(self) -> int:
        return self.inner.latent_dim

    def forward(self, x: torch.Tensor) -> Distribution:
        return self.inner(torch.cat([zero_filled(x), observed(x).to(x.dtype)], -1))


def masked_parts(model_cfg, info, likelihood: Likelihood, build_encoder) -> tuple[Likelihood, nn.Module]:
    """(MaskedLikelihood, MaskedEncoder) for a model of data with missing entries (``info.missing``)."""
    if model_cfg.arch != "mlp":
        raise ValueError(f"data.missing = mask needs model.arch = mlp (the encoder reads [x * m, m] as a flat "
                         f"vector); got arch {model_cfg.arch!r}")
    if getattr(model_cfg, "prior", "") == "vamp":
        raise ValueError("data.missing = mask with model.prior = vamp is not supported (its pseudo-inputs start from "
                         "training examples, which have missing entries); use another prior")
    if getattr(model_cfg, "library_size", "none") == "observed":
        raise ValueError("data.missing = mask with model.library_size = observed is not supported: the library size "
                         "of an example with missing counts is unknown; use model.library_size = none")
    doubled = dataclasses.replace(info, shape=(2 * info.num_dims,), num_dims=2 * info.num_dims)
    return MaskedLikelihood(likelihood), MaskedEncoder(build_encoder(model_cfg, doubled))
