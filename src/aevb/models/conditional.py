"""The conditional VAE: labels y (one-hot, C classes) are an input of the encoder and the decoder,

    q(z | x, y) = encoder([x, onehot(y)]),   p(x | z, y) = likelihood(decoder([z, onehot(y)])),
    p(z | y) = N(0, I) or a mixture prior (shared by all classes), or, with
    ``model.conditional_prior``, a learned N(z; mu_y, diag(s_y^2)) per class,

so every bound and every log-likelihood it gives is of log p(x | y), in nats (Sohn, Lee & Yan 2015;
Kingma et al. 2014, "M2" without the classifier).

The model does not take y in each method. ``model.given(y)`` binds the labels and returns a view
with the unconditional contract (``posterior(x)``, ``prior()``, ``likelihood(z)``,
``log_weights``, ``sample``, ``reconstruct``), so that objectives and the evaluator run unchanged on
it. The one-hot labels broadcast against z's leading dimensions: ``given(y)`` for z laid out
(K, B, D) (samples first: objectives), ``given(y, examples_first=True)`` for (B, S, D) (the
evaluator's blocks).
"""

from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F
from torch import nn
from torch.distributions import Distribution, Independent, Normal

from aevb.models.base import LatentVariableModel
from aevb.models.likelihoods import Likelihood
from aevb.models.mixtures import sample_with_generator


class ConditionalNormalPrior(nn.Module):
    """p(z | y) = N(z; mu_y, diag(s_y^2)), one learned mean and log-scale per class (start: N(0, I)).

    Args:
        num_classes: C.
        latent_dim: D.
    """

    analytic_kl = True  # Independent(Normal) to Independent(Normal) is registered
    learned = True

    def __init__(self, num_classes: int, latent_dim: int):
        super().__init__()
        self.loc = nn.Parameter(torch.zeros(num_classes, latent_dim))
        self.log_scale = nn.Parameter(torch.zeros(num_classes, latent_dim))

    def forward(self, onehot: torch.Tensor) -> Distribution:
        """p(z | y) for one-hot labels (..., C): batch shape (...), event shape (D,)."""
        return Independent(Normal(onehot @ self.loc, (onehot @ self.log_scale).exp(), validate_args=False), 1,
                           validate_args=False)


class LabelledDecoder:
    """z (..., D) -> decoder([z, onehot(y)]) with the bound one-hot labels broadcast over z's leading dims."""

    def __init__(self, decoder: nn.Module, onehot: torch.Tensor):
        self.decoder, self.onehot = decoder, onehot

    def __call__(self, z: torch.Tensor) -> torch.Tensor:
        y = self.onehot.expand(*z.shape[:-1], self.onehot.shape[-1])
        return self.decoder(torch.cat([z, y.to(z.dtype)], -1))


class LabelledVAE(LatentVariableModel):
    """A ``ConditionalVAE`` with labels bound: the unconditional contract for p(x | y) (one stochastic
    layer; the contract's methods come from ``models.base.LatentVariableModel``).

    Args:
        model: the conditional model.
        onehot: (B, C) one-hot labels (z laid out (..., B, D)) or (B, 1, C) (z laid out (B, S, D)).
    """

    def __init__(self, model: ConditionalVAE, onehot: torch.Tensor):
        self.model, self.onehot = model, onehot
        self.decoder = LabelledDecoder(model.decoder, onehot)
        self.likelihood_module = model.likelihood_module
        self.latent_dim = model.latent_dim
        self.posterior_layers, self.prior_layers = (), ()

    def parameters(self):
        return self.model.parameters()

    def posterior(self, x: torch.Tensor) -> Distribution:
        """q(z | x, y), batch shape (B,), event shape (D,)."""
        y = self.onehot.reshape(len(x), -1).to(x.dtype)
        return self.model.encoder(torch.cat([x, y], -1))

    def prior(self) -> Distribution:
        """p(z | y): batch shape onehot.shape[:-1] for the conditional prior, none otherwise."""
        if isinstance(self.model.prior_module, ConditionalNormalPrior):
            return self.model.prior_module(self.onehot)
        return self.model.prior_module()

    def likelihood(self, z: torch.Tensor) -> Distribution:
        """p(x | z, y) for z (..., D)."""
        return self.likelihood_module(self.decoder(z))

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None, mean: bool = True) -> torch.Tensor:
        """One draw z ~ p(z | y_i) per bound label (n must equal their number), decoded. Returns (n, num_dims)."""
        if n != len(self.onehot):
            raise ValueError(f"{len(self.onehot)} labels are bound, so n must be {len(self.onehot)}; got {n}")
        p_z = self.prior()
        if p_z.batch_shape == ():
            z = sample_with_generator(p_z, n, generator)  # (n, D)
        else:  # (n,) batch of per-label Gaussians: one draw each
            z = sample_with_generator(p_z, 1, generator)[0]
        params = self.decoder(z)
        return self.likelihood_module.mean(params) if mean else self.likelihood_module(params).sample()


class ConditionalVAE(nn.Module):
    """The conditional VAE (module docstring); ``given(y)`` is its only entry point for numbers.

    Args:
        encoder: q(z | [x, onehot(y)]) over num_dims + C inputs.
        decoder: parameters of p(x|z,y) from [z, onehot(y)], latent_dim + C inputs.
        prior: a prior module (``forward(encoder=None)``) or a ``ConditionalNormalPrior``.
        likelihood: the likelihood module.
        num_classes: C.
    """

    conditional = True

    def __init__(self, encoder: nn.Module, decoder: nn.Module, prior: nn.Module, likelihood: Likelihood,
                 num_classes: int):
        super().__init__()
        self.encoder, self.decoder, self.prior_module, self.likelihood_module = encoder, decoder, prior, likelihood
        self.num_classes = num_classes

    @property
    def latent_dim(self) -> int:
        return self.encoder.latent_dim

    @property
    def latent_dims(self) -> tuple[int, ...]:
        return (self.latent_dim,)

    @property
    def noise_dim(self) -> int:
        """Standard-normal numbers per draw of z (one layer): the trainer draws eps of this size."""
        return self.latent_dim

    def one_hot(self, y: torch.Tensor) -> torch.Tensor:
        """(B,) integer labels -> (B, C) float one-hot; a label outside 0..C-1 is refused naming it."""
        y = torch.as_tensor(y).long().reshape(-1)
        bad = ((y < 0) | (y >= self.num_classes)).nonzero()
        if len(bad):
            i = int(bad[0])
            raise ValueError(f"label {int(y[i])} (example {i}) is not a class of this model: labels are "
                             f"0..{self.num_classes - 1}")
        dtype = next(self.decoder.parameters()).dtype
        return F.one_hot(y.to(next(self.decoder.parameters()).device), self.num_classes).to(dtype)

    def given(self, y: torch.Tensor, examples_first: bool = False) -> LabelledVAE:
        """The model with labels y (B,) bound; ``examples_first`` for z laid out (B, S, D)."""
        onehot = self.one_hot(y)
        return LabelledVAE(self, onehot[:, None, :] if examples_first else onehot)

    def _needs_labels(self, *args, **kwargs):
        raise ValueError("this model is conditional (model.conditional = true): its numbers are log p(x|y) and "
                         "need labels; use model.given(y) (from the command line the data set's labels are used, "
                         "and `aevb sample RUN --label C` picks the class)")

    posterior = prior = likelihood = log_weights = reconstruct = _needs_labels
    trace = sample_posterior = log_q = log_prior = log_likelihood = posterior_moments = decode_mean = _needs_labels

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None, mean: bool = True,
               labels: torch.Tensor | None = None) -> torch.Tensor:
        """n draws decoded, for ``labels`` (n,) or, when None, the classes 0..C-1 in turn. Returns (n, num_dims)."""
        if labels is None:
            labels = torch.arange(n) % self.num_classes
        return self.given(labels).sample(n, generator, mean)


def build_conditional_model(model_cfg, info, build_encoder, decoders, prior: nn.Module,
                            likelihood: Likelihood) -> ConditionalVAE:
    """A ``ConditionalVAE`` with ``model_cfg.num_classes`` classes (the trainer resolves 0 from the data)."""
    c = model_cfg.num_classes
    if c < 1:
        raise ValueError("model.num_classes must be set for a conditional model (training sets it from the labels)")
    wide = dataclasses.replace(info, num_dims=info.num_dims + c, shape=(info.num_dims + c,))
    encoder = build_encoder(model_cfg, wide)
    num_params = likelihood.params_per_dim * info.num_dims
    decoder = decoders[model_cfg.arch](info.shape, num_params, likelihood.params_per_dim, model_cfg.latent_dim + c,
                                       model_cfg.hidden, model_cfg.activation)
    if model_cfg.conditional_prior:
        prior = ConditionalNormalPrior(c, model_cfg.latent_dim)
    return ConditionalVAE(encoder, decoder, prior, likelihood, c)
