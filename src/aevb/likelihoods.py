"""Likelihoods p(x|z): the reconstruction term of the ELBO is ``log_prob`` of one of these.

Each likelihood is an ``nn.Module`` that says how many decoder outputs it needs per data
dimension (``params_per_dim``) and turns the decoder's output, shape (..., P * D), into a
``torch.distributions`` object whose event is the whole datum (``Independent`` over D), so
``log_prob(x)`` is log p(x|z) summed over all D data dimensions, in nats, per example.

Adding a likelihood = one class here + one ``LIKELIHOODS`` entry; see docs/likelihoods.md.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.distributions import Bernoulli, Distribution, Independent


class DataMismatchError(ValueError):
    """The data do not fit the chosen likelihood; the message says what to change."""


def first_bad(x: torch.Tensor, mask: torch.Tensor) -> tuple[int, int, float] | None:
    """(example, dimension, value) of the first True in ``mask`` over x viewed as (N, D), or None."""
    if not bool(mask.any()):
        return None
    flat = mask.reshape(mask.shape[0], -1) if mask.dim() > 1 else mask.reshape(1, -1)
    i, j = (int(v) for v in flat.nonzero()[0])
    return i, j, float(x.reshape(flat.shape)[i, j])


class Likelihood(nn.Module):
    """Base class. Subclasses set ``params_per_dim``, ``supports`` and implement ``forward``.

    Attributes:
        params_per_dim: decoder outputs per data dimension.
        supports: data supports (``DataInfo.support``) this likelihood is a density for.
        discrete: True when ``log_prob`` is a probability mass (bits/dim is then meaningful).
    """

    params_per_dim: int = 1
    supports: tuple[str, ...] = ()
    discrete: bool = False

    def __init__(self, num_dims: int):
        super().__init__()
        self.num_dims = num_dims

    @classmethod
    def from_config(cls, model_cfg, info) -> "Likelihood":
        return cls(info.num_dims)

    def forward(self, params: torch.Tensor) -> Distribution:  # pragma: no cover - abstract
        raise NotImplementedError

    def mean(self, params: torch.Tensor) -> torch.Tensor:
        """E[x|z], shape (..., D): what a reconstruction or a sample figure shows."""
        return self(params).mean

    def check_data(self, x: torch.Tensor, where: str = "data") -> None:
        """Raise ``DataMismatchError`` if x (N, D) is not in this likelihood's support."""
        found = first_bad(x, ~torch.isfinite(x))
        if found:
            i, j, value = found
            raise DataMismatchError(f"{where}: example {i}, dimension {j} is {value}; NaN and inf are not data")

    def init_output_bias(self, bias: torch.Tensor, data_mean: torch.Tensor) -> None:
        """Set the decoder's last bias so that p(x|z) matches the training-data mean at the start."""


class BernoulliLikelihood(Likelihood):
    """p(x|z) = prod_d Bernoulli(x_d; sigmoid(l_d)) for binary x; decoder emits logits l.

    -log p(x|z) = sum_d BCE-with-logits(l_d, x_d): binary cross-entropy *summed* over pixels is
    exactly the negative Bernoulli log-likelihood, in nats.

    References: Kingma & Welling (2014), appendix C.1.
    """

    params_per_dim = 1
    supports = ("binary",)
    discrete = True

    def forward(self, params: torch.Tensor) -> Distribution:
        return Independent(Bernoulli(logits=params, validate_args=False), 1, validate_args=False)

    def mean(self, params: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(params)

    def check_data(self, x: torch.Tensor, where: str = "data") -> None:
        super().check_data(x, where)
        found = first_bad(x, (x != 0) & (x != 1))
        if found:
            i, j, value = found
            raise DataMismatchError(
                f"{where}: the bernoulli likelihood needs binary values 0/1, but example {i}, dimension {j} "
                f"is {value:g}. Binarize the data (--binarize dynamic or static) or choose "
                "continuous_bernoulli for values in [0,1]."
            )

    def init_output_bias(self, bias: torch.Tensor, data_mean: torch.Tensor) -> None:
        p = data_mean.clamp(1e-3, 1 - 1e-3)
        with torch.no_grad():
            bias.copy_(torch.log(p) - torch.log1p(-p))


LIKELIHOODS: dict[str, type[Likelihood]] = {
    "bernoulli": BernoulliLikelihood,
}


def build_likelihood(model_cfg, info) -> Likelihood:
    """The likelihood named by ``model_cfg.likelihood`` for data described by ``info``."""
    name = model_cfg.likelihood
    if name not in LIKELIHOODS:
        raise ValueError(f"unknown likelihood {name!r}; allowed: {', '.join(sorted(LIKELIHOODS))}")
    return LIKELIHOODS[name].from_config(model_cfg, info)
