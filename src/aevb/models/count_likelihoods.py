"""Count likelihoods p(x|z) for non-negative integers: Poisson, negative binomial, zero-inflated NB.

Each is a product over the D features of a per-feature PMF, in nats per example. The decoder's
first block of D outputs, eta, sets the means mu:

- ``model.library_size = "none"``: mu_d = exp(eta_d) (log link);
- ``model.library_size = "observed"`` (scVI): mu_d = l * softmax(eta)_d, where l = sum_d x_d is
  the example's observed total count (its library size). The likelihood is then p(x | z, l), a
  model of how the counts are spread over the features given their total; l is conditioned on,
  not modelled. Where x is not at hand (sampling, reconstructions, ``mean``) l is the training
  set's mean library size (the ``library_size`` buffer, set from the data at initialisation).

Negative binomial NB(mu, theta): mean mu, variance mu + mu^2 / theta (theta: inverse dispersion,
``model.dispersion`` = per_feature | shared | per_example | a fixed positive number). In torch's
parameterisation this is ``NegativeBinomial(total_count=theta, logits=log mu - log theta)``.

ZINB(mu, theta, pi) = pi * delta_0 + (1 - pi) * NB(mu, theta) with the dropout probability
pi = sigmoid(rho) from a decoder block:
  log p(0) = logsumexp(log pi, log(1 - pi) + log NB(0)),  log p(x > 0) = log(1 - pi) + log NB(x).

References: Lopez et al. (2018), Deep generative modeling for single-cell transcriptomics (scVI);
Eraslan et al. (2019), Single-cell RNA-seq denoising using a deep count autoencoder.
"""

from __future__ import annotations

import math
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn
from torch.distributions import Distribution, NegativeBinomial, Poisson, constraints

from aevb.models.likelihoods import DataMismatchError, Likelihood, first_bad

DISPERSION_MODES = ("per_feature", "shared", "per_example")
LIBRARY_SIZES = ("none", "observed")
MIN_LIBRARY_SIZE = 1e-8  # an all-zero example: l -> 1e-8, so p(x = 0 | z, l) = 1 to within 1e-8


def parse_dispersion(value: str | float) -> tuple[str, float | None]:
    """``ModelConfig.dispersion`` -> ("fixed", theta) or (mode, None); mode in ``DISPERSION_MODES``."""
    text = str(value).strip()
    if text in DISPERSION_MODES:
        return text, None
    try:
        theta = float(text)
    except ValueError:
        theta = float("nan")
    if not (math.isfinite(theta) and theta > 0):
        raise ValueError(f"model.dispersion = {value!r}: expected a positive number (a fixed inverse dispersion "
                         f"theta) or one of {', '.join(DISPERSION_MODES)}")
    return "fixed", theta


class CountDistribution(Distribution):
    """prod_d p(x_d) for the family "poisson" | "nb" | "zinb"; batch shape (...), event shape (D,).

    Args:
        family: "poisson", "nb" or "zinb".
        eta: (..., D) mean parameters (log means, or softmax logits with an observed library size).
        log_theta: (..., D) or broadcastable log inverse dispersions (nb, zinb).
        dropout_logits: (..., D) logits rho of the zero-inflation probability (zinb).
        observed_library: mu = l softmax(eta) with l = sum_d x_d (else mu = exp(eta)).
        default_library_size: l where x is not given (``mean``, ``sample``).
    """

    arg_constraints: ClassVar[dict] = {}
    support = constraints.independent(constraints.nonnegative_integer, 1)
    has_rsample = False

    def __init__(self, family: str, eta: torch.Tensor, log_theta: torch.Tensor | None = None,
                 dropout_logits: torch.Tensor | None = None, observed_library: bool = False,
                 default_library_size: torch.Tensor | float = 1.0):
        self.family, self.eta, self.log_theta, self.dropout_logits = family, eta, log_theta, dropout_logits
        self.observed_library = observed_library
        self.default_library_size = default_library_size
        super().__init__(eta.shape[:-1], eta.shape[-1:], validate_args=False)

    def log_mean(self, x: torch.Tensor | None = None) -> torch.Tensor:
        """log mu, (..., D); with an observed library size l = sum_d x_d (x given) or the default."""
        if not self.observed_library:
            return self.eta
        if x is None:
            log_l = torch.log(torch.as_tensor(self.default_library_size, dtype=self.eta.dtype, device=self.eta.device))
        else:
            log_l = torch.log(x.sum(-1, keepdim=True).clamp_min(MIN_LIBRARY_SIZE))
        return log_l + torch.log_softmax(self.eta, -1)

    def base(self, log_mu: torch.Tensor) -> Distribution:
        """The per-feature Poisson or NB (no zero inflation), batch shape (..., D)."""
        if self.family == "poisson":
            return Poisson(torch.exp(log_mu), validate_args=False)
        return NegativeBinomial(total_count=torch.exp(self.log_theta), logits=log_mu - self.log_theta,
                                validate_args=False)

    @property
    def rho(self) -> torch.Tensor:
        """The dropout logits (zinb only)."""
        if self.dropout_logits is None:
            raise ValueError(f"the {self.family} distribution has no zero inflation")
        return self.dropout_logits

    def log_prob_per_dim(self, x: torch.Tensor) -> torch.Tensor:
        """log p(x_d | z) for each feature, (..., D), in nats."""
        log_p = self.base(self.log_mean(x)).log_prob(x)
        if self.family != "zinb":
            return log_p
        log_pi, log_not_pi = F.logsigmoid(self.rho), F.logsigmoid(-self.rho)
        log_p_zero = torch.logaddexp(log_pi, log_not_pi + log_p)
        return torch.where(x == 0, log_p_zero, log_not_pi + log_p)

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """log p(x|z) = sum_d log p(x_d|z), (...,), in nats."""
        return self.log_prob_per_dim(x).sum(-1)

    @property
    def mean(self) -> torch.Tensor:
        """E[x|z] = (1 - pi) mu (pi = 0 without zero inflation), at the default library size."""
        mu = torch.exp(self.log_mean())
        return mu * torch.sigmoid(-self.rho) if self.family == "zinb" else mu

    def sample(self, sample_shape=()) -> torch.Tensor:
        with torch.no_grad():
            x = self.base(self.log_mean()).sample(sample_shape)
            if self.family == "zinb":
                keep = torch.bernoulli(torch.sigmoid(-self.rho).expand(x.shape))
                x = x * keep
            return x


class CountLikelihood(Likelihood):
    """Shared machinery of the count likelihoods p(x|z): parameter blocks, dispersion, library size.

    Decoder blocks, each of D numbers: eta (means), then log theta when ``dispersion =
    per_example``, then the dropout logits rho (zinb). Learned dispersions (per_feature: (D,),
    shared: one number) are ``nn.Parameter`` log theta, initialised to 0 (theta = 1).
    """

    family = "poisson"
    supports = ("counts",)
    discrete = True
    wants_counts = True  # the data layer keeps the raw counts (no scaling, binarization, standardization)

    def __init__(self, num_dims: int, dispersion: str | float = "per_feature", library_size: str = "none"):
        super().__init__(num_dims)
        if library_size not in LIBRARY_SIZES:
            raise ValueError(f"model.library_size = {library_size!r}: allowed values are {', '.join(LIBRARY_SIZES)}")
        self.observed_library = library_size == "observed"
        self.register_buffer("library_size", torch.tensor(1.0))
        self.dispersion, self.fixed_theta = ("none", None) if self.family == "poisson" else parse_dispersion(dispersion)
        blocks = ["eta"] + (["log_theta"] if self.dispersion == "per_example" else [])
        self.blocks = blocks + (["dropout"] if self.family == "zinb" else [])
        self.params_per_dim = len(self.blocks)
        if self.dispersion == "per_feature":
            self.log_theta = nn.Parameter(torch.zeros(num_dims))
        elif self.dispersion == "shared":
            self.log_theta = nn.Parameter(torch.zeros(()))

    @classmethod
    def from_config(cls, model_cfg, info) -> CountLikelihood:
        return cls(info.num_dims, getattr(model_cfg, "dispersion", "per_feature"),
                   getattr(model_cfg, "library_size", "none"))

    def block(self, params: torch.Tensor, name: str) -> torch.Tensor:
        """The (..., D) block ``name`` of the decoder output (..., P * D)."""
        i = self.blocks.index(name)
        return params[..., i * self.num_dims:(i + 1) * self.num_dims]

    def forward(self, params: torch.Tensor) -> Distribution:
        eta = self.block(params, "eta")
        if self.dispersion == "per_example":
            log_theta = self.block(params, "log_theta")
        elif self.dispersion == "fixed" and self.fixed_theta is not None:
            log_theta = torch.full_like(eta, math.log(self.fixed_theta))
        elif self.dispersion == "none":
            log_theta = None
        else:
            log_theta = self.log_theta.expand_as(eta)
        dropout = self.block(params, "dropout") if self.family == "zinb" else None
        return CountDistribution(self.family, eta, log_theta, dropout, self.observed_library, self.library_size)

    def check_data(self, x: torch.Tensor, where: str = "data") -> None:
        super().check_data(x, where)
        found = first_bad(x, (x < 0) | (x != torch.round(x)))
        if found:
            i, j, value = found
            raise DataMismatchError(
                f"{where}: the {self.family} likelihood needs non-negative integer counts, but example {i}, "
                f"column {j} is {value:g}. Give it raw counts (not normalised, log-transformed or scaled values), "
                "or choose gaussian/laplace for real-valued data.")

    def init_output_bias(self, bias: torch.Tensor, data_mean: torch.Tensor) -> None:
        """eta such that E[x|z] is the data mean at the start; rho = -2 (pi = 0.12) for zinb."""
        mean = data_mean.clamp_min(1e-4)
        with torch.no_grad():
            self.library_size.fill_(float(data_mean.sum().clamp_min(MIN_LIBRARY_SIZE)))
            eta = torch.log(mean / mean.sum()) if self.observed_library else torch.log(mean)
            if self.family == "zinb":
                rho = -2.0
                eta = eta - F.logsigmoid(torch.tensor(-rho))
                i = self.blocks.index("dropout")
                bias[i * self.num_dims:(i + 1) * self.num_dims].fill_(rho)
            bias[: self.num_dims].copy_(eta)


class PoissonLikelihood(CountLikelihood):
    """p(x|z) = prod_d Poisson(x_d; mu_d) = prod_d mu_d^x_d e^(-mu_d) / x_d! for counts x.

    ``torch.distributions.Poisson``; mu_d = exp(eta_d), or l softmax(eta)_d with the observed
    library size l (see the module docstring). Variance = mean: over-dispersed counts want nb.
    """

    family = "poisson"


class NegativeBinomialLikelihood(CountLikelihood):
    """p(x|z) = prod_d NB(x_d; mu_d, theta_d) = C(x_d + theta_d - 1, x_d) (mu/(mu+theta))^x (theta/(mu+theta))^theta.

    Mean mu, variance mu + mu^2/theta; ``torch.distributions.NegativeBinomial(total_count=theta,
    logits=log mu - log theta)``. theta by ``model.dispersion`` (module docstring).
    """

    family = "nb"


class ZeroInflatedNegativeBinomialLikelihood(CountLikelihood):
    """p(x|z) = prod_d [pi_d 1(x_d = 0) + (1 - pi_d) NB(x_d; mu_d, theta_d)], pi_d = sigmoid(rho_d) from the decoder.

    The mixture is evaluated with log-sum-exp at x_d = 0 (module docstring); scVI's default.
    """

    family = "zinb"
