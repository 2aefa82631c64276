"""The VAE with L >= 1 stochastic layers: the model contract of ``models/base.py`` for any L.

    q(z|x)  = q(z_1|x) prod_{l=2..L} q(z_l|z_{l-1})            ``encoder``, ``posterior_layers``
    p(x, z) = p(z_L) prod_{l=1..L-1} p(z_l|z_{l+1}) p(x|z_1)    ``prior_module``, ``prior_layers``,
                                                                ``decoder`` + ``likelihood_module``
L = 1 is the AEVB model (the default); L = 2 with diagonal Gaussian conditionals from MLPs is the
IWAE paper's two-layer model (Burda et al. 2016, section 5). The one-layer model's parameter names
(``encoder.*``, ``decoder.*``, ``prior_module.*``, ``likelihood_module.*``) are those of every
checkpoint written so far; the lists of upper layers are empty for it and add no names.

The model exposes distributions and log-densities; it has no loss, no epochs and no distributed
flags (training code owns training).
"""

from __future__ import annotations

import dataclasses

import torch
from torch import nn
from torch.distributions import Distribution

from aevb.models.base import LatentVariableModel
from aevb.models.conditional import ConditionalVAE
from aevb.models.decoders import DECODERS
from aevb.models.encoders import GaussianEncoder
from aevb.models.likelihoods import Likelihood, build_likelihood
from aevb.models.masks import masked_parts
from aevb.models.nets import MLP
from aevb.models.posteriors import build_encoder
from aevb.models.priors import build_prior
from aevb.models.size import warn_if_large


class VAE(LatentVariableModel, nn.Module):
    """x (B, num_dims) -> q(z|x); z_1 (..., B, D_1) -> p(x|z_1); L stochastic layers.

    Args:
        encoder: module returning q(z_1|x) with batch shape (B,) and event shape (D_1,).
        decoder: module mapping z_1 (..., D_1) to likelihood parameters (..., P * num_dims).
        prior: module whose ``forward(encoder=...)`` returns p(z_L) with event shape (D_L,) (the
            VampPrior evaluates the encoder on its pseudo-inputs; it holds no encoder weights).
        likelihood: module turning decoder parameters into p(x|z_1) with event shape (num_dims,).
        posterior_layers: L - 1 modules, the l-th maps z_l (..., D_l) to q(z_{l+1}|z_l).
        prior_layers: L - 1 modules, the l-th maps z_{l+1} (..., D_{l+1}) to p(z_l|z_{l+1}).
    """

    def __init__(self, encoder: nn.Module, decoder: nn.Module, prior: nn.Module, likelihood: Likelihood,
                 posterior_layers=(), prior_layers=()):
        super().__init__()
        if len(posterior_layers) != len(prior_layers):
            raise ValueError(f"{len(posterior_layers)} posterior layers but {len(prior_layers)} prior layers")
        self.encoder = encoder
        self.decoder = decoder
        self.prior_module = prior
        self.likelihood_module = likelihood
        self.posterior_layers = nn.ModuleList(posterior_layers)
        self.prior_layers = nn.ModuleList(prior_layers)

    @property
    def latent_dim(self) -> int:
        """D_1, the size of the layer next to x (the only one of a one-layer model)."""
        return self.encoder.latent_dim

    # -- the factors, as distributions --------------------------------------------------------------
    def posterior(self, x: torch.Tensor) -> Distribution:
        """q(z_1|x), batch shape (B,), event shape (D_1,)."""
        return self.encoder(x)

    def prior(self) -> Distribution:
        """p(z_L), event shape (D_L,), no batch dims (the prior is given the encoder, or with L >= 2
        layers ``top_posterior``; see ``priors.py``)."""
        return self.prior_module(encoder=self.top_posterior if len(self.posterior_layers) else self.encoder)

    def top_posterior(self, x: torch.Tensor) -> Distribution:
        """q(z_L | x) along the posterior means: q(z_1|x), then q(z_{l+1} | z_l = E_q[z_l]) up to z_L.

        The components of the hierarchical VampPrior on the top layer, p(z_L) = (1/K) sum_k
        q(z_L | u_k) (Tomczak & Welling 2018, sec. 3.3; the exact marginal of z_L under q has no
        closed form, so each pseudo-input's path goes through the means: a Gaussian per u_k, a valid
        learned prior whatever the path). Batch shape (B,), event shape (D_L,).
        """
        q = self.encoder(x)
        for layer in self.posterior_layers:
            try:
                q = layer(q.mean)
            except NotImplementedError:
                raise ValueError(f"the hierarchical VampPrior needs the mean of q(z_1|x); {type(q).__name__} "
                                 "has none in closed form (use model.posterior = gaussian or full_covariance)") from None
        return q

    def likelihood(self, z: torch.Tensor) -> Distribution:
        """p(x|z_1) for z_1 of shape (..., D_1); event shape (num_dims,)."""
        return self.likelihood_module(self.decoder(z))


def gaussian_layer(in_dim: int, hidden, out_dim: int, activation: str) -> GaussianEncoder:
    """A diagonal Gaussian conditional N(mu(h), diag(exp(log_var(h)))) from an MLP in_dim -> hidden -> 2 out_dim."""
    return GaussianEncoder(MLP(in_dim, hidden, 2 * out_dim, activation), out_dim)


def layer_sizes(model_cfg) -> list[int]:
    """(D_1, ..., D_L): ``model.latent_dims`` when given, else [``model.latent_dim``]."""
    return list(model_cfg.latent_dims) if getattr(model_cfg, "latent_dims", None) else [model_cfg.latent_dim]


def build_model(model_cfg, info, train_mean: torch.Tensor | None = None,
                train_data: torch.Tensor | None = None) -> VAE | ConditionalVAE:
    """A VAE for data described by ``info`` (``DataInfo``) from a ``ModelConfig``.

    The x <-> z_1 networks come from ``model.arch`` with ``model.hidden``; for L >= 2 layers
    (``model.latent_dims``) each z_l <-> z_{l+1} pair gets diagonal Gaussian conditionals from
    tanh/... MLPs with ``model.stochastic_hidden`` (q) and its reverse (p), as in the IWAE paper.

    Args:
        model_cfg: ``ModelConfig``.
        info: ``DataInfo`` with ``shape`` and ``num_dims``.
        train_mean: (num_dims,) mean of the training data, used to initialise the decoder's
            output bias when ``model_cfg.init_bias_from_data`` (IWAE code; worth about 1 nat).
        train_data: (N, num_dims) training examples: priors that start from the data (the VampPrior's
            pseudo-inputs) and, with ``init_bias_from_data``, the likelihood
            (``Likelihood.init_from_data``: a categorical's histogram, a learned Gaussian scale's PCA
            residual) start from them; None leaves their default start (a checkpoint overwrites it).
    """
    likelihood = build_likelihood(model_cfg, info)
    if getattr(model_cfg, "conditional", False):  # q(z|x,y), p(x|z,y): models/conditional.py
        from aevb.models.conditional import build_conditional_model

        if getattr(info, "missing", "error") == "mask":
            raise ValueError("model.conditional = true with masked (NaN) entries is not supported; "
                             "fill or drop the missing values, or train without labels")
        model = build_conditional_model(model_cfg, info, build_encoder, DECODERS, build_prior(model_cfg, info),
                                        likelihood)
        if train_data is not None and model_cfg.init_bias_from_data:
            likelihood.init_from_data(model.decoder.output_bias, train_data, model_cfg.latent_dim)
        elif train_mean is not None and model_cfg.init_bias_from_data:
            likelihood.init_output_bias(model.decoder.output_bias, train_mean)
        return model
    dims = layer_sizes(model_cfg)
    first_cfg = dataclasses.replace(model_cfg, latent_dim=dims[0])  # q(z_1|x) of the family model.posterior
    if getattr(info, "missing", "error") == "mask":  # NaN entries are unobserved: models/masks.py
        likelihood, encoder = masked_parts(first_cfg, info, likelihood, build_encoder)
    else:
        encoder = build_encoder(first_cfg, info)
    num_params = likelihood.params_per_dim * info.num_dims
    decoder = DECODERS[model_cfg.arch](info.shape, num_params, likelihood.params_per_dim, dims[0],
                                       model_cfg.hidden, model_cfg.activation)
    stochastic_hidden = list(getattr(model_cfg, "stochastic_hidden", []))
    posterior_layers = [gaussian_layer(a, stochastic_hidden, b, model_cfg.activation) for a, b in zip(dims, dims[1:])]
    prior_layers = [gaussian_layer(b, stochastic_hidden[::-1], a, model_cfg.activation) for a, b in zip(dims, dims[1:])]
    prior = build_prior(dataclasses.replace(model_cfg, latent_dim=dims[-1]), info)  # p(z_L)
    if train_data is not None and hasattr(prior, "init_from_data"):
        prior.init_from_data(train_data)
    if train_data is not None and model_cfg.init_bias_from_data:
        likelihood.init_from_data(decoder.output_bias, train_data, dims[0])
    elif train_mean is not None and model_cfg.init_bias_from_data:
        likelihood.init_output_bias(decoder.output_bias, train_mean)
    model = VAE(encoder, decoder, prior, likelihood, posterior_layers, prior_layers)
    if train_data is not None or train_mean is not None:  # building to train: say what the size costs
        warn_if_large(model, f"The decoder emits {num_params:,} numbers ({likelihood.params_per_dim} per data dimension "
                             f"for {model_cfg.likelihood}); a smaller last hidden layer or another likelihood shrinks it.")
    return model
