"""The VAE: an encoder q(z|x), a decoder, a prior p(z) and a likelihood p(x|z).

The model exposes distributions and importance weights; it has no loss, no epochs and no
distributed flags (training code owns training)."""

from __future__ import annotations

import torch
from torch import nn
from torch.distributions import Distribution

from aevb.models.conditional import ConditionalVAE
from aevb.models.decoders import DECODERS
from aevb.models.likelihoods import Likelihood, build_likelihood
from aevb.models.masks import masked_parts
from aevb.models.mixtures import sample_with_generator
from aevb.models.posteriors import build_encoder
from aevb.models.priors import build_prior
from aevb.models.size import warn_if_large


class VAE(nn.Module):
    """x (B, num_dims) -> q(z|x); z (..., B, D) -> p(x|z).

    Args:
        encoder: module returning q(z|x) with batch shape (B,) and event shape (D,).
        decoder: module mapping z (..., D) to likelihood parameters (..., P * num_dims).
        prior: module whose ``forward(encoder=...)`` returns p(z) with event shape (D,) (the
            VampPrior evaluates the encoder on its pseudo-inputs; it holds no encoder weights).
        likelihood: module turning decoder parameters into p(x|z) with event shape (num_dims,).
    """

    def __init__(self, encoder: nn.Module, decoder: nn.Module, prior: nn.Module, likelihood: Likelihood):
        super().__init__()
        self.encoder = encoder
        self.decoder = decoder
        self.prior_module = prior
        self.likelihood_module = likelihood

    @property
    def latent_dim(self) -> int:
        return self.encoder.latent_dim

    def posterior(self, x: torch.Tensor) -> Distribution:
        """q(z|x), batch shape (B,), event shape (D,)."""
        return self.encoder(x)

    def prior(self) -> Distribution:
        """p(z), event shape (D,), no batch dims (the prior is given the encoder; see ``priors.py``)."""
        return self.prior_module(encoder=self.encoder)

    def likelihood(self, z: torch.Tensor) -> Distribution:
        """p(x|z) for z of shape (..., D); event shape (num_dims,)."""
        return self.likelihood_module(self.decoder(z))

    def log_weights(self, x: torch.Tensor, num_samples: int) -> torch.Tensor:
        """log w_k = log p(x|z_k) + log p(z_k) - log q(z_k|x), z_k ~ q(z|x), in nats.

        Returns:
            (K, B) log importance weights.
        """
        q_z = self.posterior(x)
        z = q_z.rsample((num_samples,))  # (K, B, D)
        log_p_x_given_z = self.likelihood(z).log_prob(x)  # (K, B)
        return log_p_x_given_z + self.prior().log_prob(z) - q_z.log_prob(z)

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None, mean: bool = True) -> torch.Tensor:
        """n draws z ~ p(z) decoded to E[x|z] (``mean=True``) or to x ~ p(x|z). Returns (n, num_dims).

        z is drawn exactly, through ``generator`` only (``mixtures.sample_with_generator``: a
        mixture prior draws the component, then the Gaussian)."""
        z = sample_with_generator(self.prior(), n, generator)  # (n, D)
        params = self.decoder(z)
        if mean:
            return self.likelihood_module.mean(params)
        return self.likelihood_module(params).sample()

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """E[x | z = posterior mean]: the reconstruction figure shows this. Returns (B, num_dims)."""
        return self.likelihood_module.mean(self.decoder(self.posterior(x).mean))


def build_model(model_cfg, info, train_mean: torch.Tensor | None = None,
                train_data: torch.Tensor | None = None) -> VAE | ConditionalVAE:
    """A VAE for data described by ``info`` (``DataInfo``) from a ``ModelConfig``.

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
    if getattr(info, "missing", "error") == "mask":  # NaN entries are unobserved: models/masks.py
        likelihood, encoder = masked_parts(model_cfg, info, likelihood, build_encoder)
    else:
        encoder = build_encoder(model_cfg, info)
    num_params = likelihood.params_per_dim * info.num_dims
    decoder = DECODERS[model_cfg.arch](info.shape, num_params, likelihood.params_per_dim, model_cfg.latent_dim,
                                       model_cfg.hidden, model_cfg.activation)
    prior = build_prior(model_cfg, info)
    if train_data is not None and hasattr(prior, "init_from_data"):
        prior.init_from_data(train_data)
    if train_data is not None and model_cfg.init_bias_from_data:
        likelihood.init_from_data(decoder.output_bias, train_data, model_cfg.latent_dim)
    elif train_mean is not None and model_cfg.init_bias_from_data:
        likelihood.init_output_bias(decoder.output_bias, train_mean)
    model = VAE(encoder, decoder, prior, likelihood)
    if train_data is not None or train_mean is not None:  # building to train: say what the size costs
        warn_if_large(model, f"The decoder emits {num_params:,} numbers ({likelihood.params_per_dim} per data dimension "
                             f"for {model_cfg.likelihood}); a smaller last hidden layer or another likelihood shrinks it.")
    return model
