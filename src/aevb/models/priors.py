"""Priors p(z). A prior is a module whose ``forward(encoder=None)`` returns a Distribution over z
with event shape (latent_dim,) and no batch dimensions.

  standard_normal  p(z) = N(z; 0, I)                                  (AEVB; closed-form KL)
  mog              p(z) = sum_k pi_k N(z; mu_k, diag s_k^2), all learned, pi = softmax(logits)
  vamp             p(z) = (1/K) sum_k q(z | u_k), K learned pseudo-inputs u_k in data space
                   (Tomczak & Welling 2018, "VAE with a VampPrior", eq. 9)

The VampPrior is evaluated with the model's encoder, passed in at each call
(``prior(encoder=model.encoder)``): the prior owns only its pseudo-inputs, never a second
reference to the encoder's weights, so a checkpoint holds each weight once (safetensors refuses
tensors that share memory). Learned priors have no closed-form KL(q(z|x) || p(z)) (``analytic_kl``
is False): the ELBO takes the Monte Carlo KL (``objective.kl = mc``), which config validation
requires up front. New priors are a class plus a ``PRIORS`` entry; each class builds itself from
the ``ModelConfig`` with ``from_config(model_cfg, info)``.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.distributions import Distribution, Independent, Normal

from aevb.models.mixtures import DiagonalGaussianMixture, mixture_of

DEFAULT_COMPONENTS = {"mog": 10, "vamp": 500}
RANDOM_INIT_STD = 0.01  # "random" pseudo-inputs: N(training mean, 0.01^2) per dimension (the paper's N(0.05, 0.01) generalised)


class Prior(nn.Module):
    """What every prior declares: whether KL(q || p) has a closed form, whether it has learned
    parameters (a mixture: no inverse CDF, no manifold figure), and how it is built from the config."""

    analytic_kl: bool = False  # a closed-form KL(q(z|x) || p(z)) is registered (objective.kl = analytic allowed)
    learned: bool = True

    @classmethod
    def from_config(cls, model_cfg, info) -> Prior:
        raise NotImplementedError

    def forward(self, encoder: nn.Module | None = None) -> Distribution:
        raise NotImplementedError


class StandardNormalPrior(Prior):
    """p(z) = N(z; 0, I), the AEVB prior.

    Args:
        latent_dim: dimension D of z.
    """

    analytic_kl = True  # KL(N(mu, diag s^2) || N(0, I)) is registered in torch.distributions
    learned = False

    def __init__(self, latent_dim: int):
        super().__init__()
        self.latent_dim = latent_dim
        self.register_buffer("loc", torch.zeros(latent_dim), persistent=False)
        self.register_buffer("scale", torch.ones(latent_dim), persistent=False)

    @classmethod
    def from_config(cls, model_cfg, info) -> StandardNormalPrior:
        return cls(model_cfg.latent_dim)

    def forward(self, encoder: nn.Module | None = None) -> Distribution:
        """Returns N(0, I) with event shape (D,); ``encoder`` is not used."""
        return Independent(Normal(self.loc, self.scale, validate_args=False), 1, validate_args=False)


class MixtureOfGaussiansPrior(Prior):
    """p(z) = sum_k pi_k N(z; mu_k, diag(s_k^2)), pi = softmax(logits); mu, log s and logits learned.

    Initialised with equal weights, unit scales and means mu_k ~ N(0, I) (torch's global generator,
    seeded by the trainer like every other initial weight).

    Args:
        latent_dim: dimension D of z.
        num_components: K.
    """

    def __init__(self, latent_dim: int, num_components: int):
        super().__init__()
        self.latent_dim, self.num_components = latent_dim, num_components
        self.logits = nn.Parameter(torch.zeros(num_components))
        self.loc = nn.Parameter(torch.randn(num_components, latent_dim))
        self.log_scale = nn.Parameter(torch.zeros(num_components, latent_dim))

    @classmethod
    def from_config(cls, model_cfg, info) -> MixtureOfGaussiansPrior:
        return cls(model_cfg.latent_dim, model_cfg.prior_components or DEFAULT_COMPONENTS["mog"])

    def forward(self, encoder: nn.Module | None = None) -> DiagonalGaussianMixture:
        """Returns the mixture (a ``MixtureSameFamily``), event shape (D,); ``encoder`` is not used."""
        return DiagonalGaussianMixture(self.logits, self.loc, self.log_scale.exp())


class VampPrior(Prior):
    """p(z) = (1/K) sum_k q(z | u_k): the aggregate posterior of K learned pseudo-inputs u_k.

    The pseudo-inputs live in data space, (K, num_dims), unconstrained. They are initialised by
    ``init_from_data``: K distinct training examples (``init = "data"``) or N(training mean,
    0.01^2) per dimension (``init = "random"``), both drawn with torch's global generator.

    Args:
        latent_dim: dimension D of z.
        num_components: K pseudo-inputs.
        num_dims: dimension of one (flattened) example.
        init: "data" or "random".

    References: Tomczak & Welling (2018), VAE with a VampPrior, AISTATS, eq. 9.
    """

    def __init__(self, latent_dim: int, num_components: int, num_dims: int, init: str = "data"):
        super().__init__()
        if init not in ("data", "random"):
            raise ValueError(f"VampPrior init {init!r}: allowed values are data, random")
        self.latent_dim, self.num_components, self.init = latent_dim, num_components, init
        self.pseudo_inputs = nn.Parameter(torch.full((num_components, num_dims), 0.5))

    @classmethod
    def from_config(cls, model_cfg, info) -> VampPrior:
        return cls(model_cfg.latent_dim, model_cfg.prior_components or DEFAULT_COMPONENTS["vamp"], info.num_dims,
                   model_cfg.prior_init)

    @torch.no_grad()
    def init_from_data(self, x_train: torch.Tensor) -> None:
        """Set the pseudo-inputs from the training data x_train (N, num_dims): K examples drawn
        without replacement (with replacement when K > N) for ``init = "data"``, or the per-dimension
        mean plus N(0, 0.01^2) noise for ``init = "random"``."""
        k, n = self.num_components, len(x_train)
        if self.init == "data":
            idx = torch.randperm(n)[:k] if k <= n else torch.randint(0, n, (k,))
            self.pseudo_inputs.copy_(x_train[idx.to(x_train.device)].to(self.pseudo_inputs))
        else:
            mean = x_train.float().mean(0).to(self.pseudo_inputs)
            self.pseudo_inputs.copy_(mean + RANDOM_INIT_STD * torch.randn(self.pseudo_inputs.shape).to(mean))

    def forward(self, encoder: nn.Module | None = None) -> Distribution:
        """Returns (1/K) sum_k q(z | u_k) (a ``MixtureSameFamily`` over the encoder's q), event shape (D,).

        Args:
            encoder: the model's encoder, x (K, num_dims) -> q(z|x) with batch shape (K,).
        """
        if encoder is None:
            raise ValueError("the VampPrior p(z) = 1/K sum_k q(z|u_k) needs the encoder: call it as "
                             "prior(encoder=model.encoder), or use model.prior()")
        q_u = encoder(self.pseudo_inputs)  # batch shape (K,), event shape (D,)
        logits = torch.zeros(self.num_components, device=self.pseudo_inputs.device, dtype=self.pseudo_inputs.dtype)
        return mixture_of(logits, q_u)


PRIORS: dict[str, type[Prior]] = {"standard_normal": StandardNormalPrior, "mog": MixtureOfGaussiansPrior, "vamp": VampPrior}


def build_prior(model_cfg, info) -> Prior:
    """The prior named by ``model_cfg.prior`` (a ``PRIORS`` key), built from the config."""
    if model_cfg.prior not in PRIORS:
        raise ValueError(f"unknown prior {model_cfg.prior!r}; allowed: {', '.join(PRIORS)}")
    return PRIORS[model_cfg.prior].from_config(model_cfg, info)
