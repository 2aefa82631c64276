"""The model contract: what every latent-variable model in aevb offers and what callers may assume.

Everything downstream of the model (objectives, the K-sample evaluator, scores, sampling, figures,
export, the API) talks to it through the methods below, so that a new family (more layers, a flow
or full-covariance posterior, a learned prior) is added in ``aevb/models/`` and nowhere else.

The model. L >= 1 stochastic layers z = (z_1, ..., z_L), z_1 next to the data:
    q(z|x)   = q(z_1|x) prod_{l=2..L} q(z_l|z_{l-1})            (inference network, bottom-up)
    p(x, z)  = p(z_L) prod_{l=1..L-1} p(z_l|z_{l+1}) p(x|z_1)    (generative model, top-down)
Each factor is a ``torch.distributions.Distribution`` with ``rsample`` and ``log_prob`` (event
shape (D_l,) for a latent layer, (num_dims,) for p(x|z_1)); nothing else is assumed of it.

Required of a model (``VAE`` in ``models/vae.py`` implements all of it for any L):
    latent_dims                                   (D_1, ..., D_L)
    noise_dim                                     sum_l D_l: the standard-normal noise of one draw of z
    sample_posterior(x, num_samples, noise)    -> z: tuple of L tensors (K, B, D_l), z ~ q(z|x)
    log_q(z, x), log_prior(z), log_likelihood(x, z)
                                               -> each (K, B), in nats (summed over layers / dims)
    log_weights(x, num_samples, noise)         -> (K, B): log p(x|z_k) + log p(z_k) - log q(z_k|x)
    trace(x, num_samples, noise, kl)           -> ``Trace``: all of the above from one pass (objectives use it)
    sample(n, generator, mean)                 -> (n, num_dims): ancestral sampling z_L ~ p(z_L), ..., x
    posterior_moments(x, num_samples, generator)
                                               -> per layer (mean, variance, how) of q(z_l|x): closed
                                                  form where the layer has one, else Monte Carlo
    reconstruct(x), decode_mean(z_L)           -> E[x|z_1] at the posterior mean / below a top-layer z_L
Optional extras a component may offer and a caller may use only through the helpers here (which
fall back or report "absent"): a closed-form KL (``torch.distributions.kl_divergence``, pairs added
with ``register_kl``), a posterior mean/variance (``Distribution.mean`` raising
NotImplementedError where absent), a prior inverse CDF (``prior_quantiles``).

Noise. ``noise`` is a ``torch.Generator`` (draws eps ~ N(0, I) of shape (K, B, noise_dim) from it),
a tensor eps of that shape (the trainer draws it for the *global* batch and keeps this rank's rows,
so one process and W processes see the same z for every example), or None (torch's global
generator). Layer l uses columns sum_{m<l} D_m ... of eps: z_l = f_l(eps_l; x or z_{l-1}) through
``rsample_from_noise``, which knows how torch's reparameterised families turn standard-normal noise
into a sample (Normal, Independent, MultivariateNormal, TransformedDistribution over any of these,
and whatever a family adds with ``register_reparameterization``). A family it does not know is
sampled with its own ``rsample`` from torch's global generator (seeded per rank by the trainer),
so its runs are reproducible but depend on the number of processes.

Priors. A prior module's ``forward()`` returns p(z_L) (event (D_L,), no batch dims); a prior that
needs the inference network (the VampPrior: a mixture of q(z|u_k) at learned pseudo-inputs) sets
``uses_encoder = True`` and is called as ``prior_module(encoder)``.

References: Kingma & Welling (2014), Auto-Encoding Variational Bayes; Burda, Grosse &
Salakhutdinov (2016), Importance Weighted Autoencoders, section 2 (the L-layer model).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import torch
from torch.distributions import (
    Distribution,
    Independent,
    MultivariateNormal,
    Normal,
    TransformedDistribution,
    kl_divergence,
)
from torch.distributions.utils import _standard_normal

from aevb.models.mixtures import sample_with_generator

MC_SAMPLES = 256  # Monte Carlo draws for a posterior mean/variance without a closed form


class Trace(NamedTuple):
    """One pass through the model for x (B, num_dims) and K draws z ~ q(z|x), each term in nats.

    ``kl`` is a per-draw estimate of KL(q(z|x) || p(z)) (None unless asked for): (B,) when it is
    exact (a one-layer model with a closed form), else (K, B). ``z_means`` holds, per layer, the
    mean of the factor each z_l was drawn from where it has a closed form (layer 1: E_q[z_1|x],
    (B, D_1); layer l: E[z_l|z_{l-1}] at the drawn parent, (K, B, D_l)), else the draws z_l: their
    average over the K draws estimates E_q[z_l|x] (Rao-Blackwellised where a closed form exists).
    """

    z: tuple  # L tensors (K, B, D_l)
    log_p_x_given_z: torch.Tensor  # (K, B)
    log_p_z: torch.Tensor  # (K, B)
    log_q_z: torch.Tensor  # (K, B)
    kl: torch.Tensor | None
    z_means: tuple = ()


# -- noise ---------------------------------------------------------------------------------------
def standard_normal_noise(noise, num_samples: int, batch_size: int, dim: int, like: torch.Tensor) -> torch.Tensor:
    """eps (K, B, dim) ~ N(0, I): from a Generator, as given (a tensor), or from torch's global generator (None)."""
    shape = (num_samples, batch_size, dim)
    if noise is None:
        return _standard_normal(shape, dtype=like.dtype, device=like.device)
    if isinstance(noise, torch.Generator):
        return torch.randn(shape, generator=noise, dtype=like.dtype, device=like.device)
    if isinstance(noise, torch.Tensor):
        if tuple(noise.shape) != shape:
            raise ValueError(f"noise eps has shape {tuple(noise.shape)}; this draw needs (num_samples, batch, "
                             f"noise_dim) = {shape}")
        return noise
    raise TypeError(f"noise must be a torch.Generator, a tensor or None, got {type(noise).__name__}")


_REPARAMETERIZATIONS: dict[type, Callable[[Distribution, torch.Tensor], torch.Tensor]] = {}


def register_reparameterization(cls: type):
    """Decorator: ``fn(dist, eps) -> z`` turns standard-normal eps (sample_shape + batch + event) into
    a sample of ``cls`` with gradients (like ``register_kl``). Looked up along the class's MRO."""
    def wrap(fn):
        _REPARAMETERIZATIONS[cls] = fn
        return fn
    return wrap


@register_reparameterization(Normal)
def _normal(q: Normal, eps: torch.Tensor) -> torch.Tensor:
    return q.loc + eps * q.scale  # Normal.rsample's expression


@register_reparameterization(Independent)
def _independent(q: Independent, eps: torch.Tensor) -> torch.Tensor:
    return rsample_from_noise(q.base_dist, eps)


@register_reparameterization(MultivariateNormal)
def _multivariate_normal(q: MultivariateNormal, eps: torch.Tensor) -> torch.Tensor:
    return q.loc + (q.scale_tril @ eps.unsqueeze(-1)).squeeze(-1)  # loc + L eps


@register_reparameterization(TransformedDistribution)
def _transformed(q: TransformedDistribution, eps: torch.Tensor) -> torch.Tensor:
    z = rsample_from_noise(q.base_dist, eps)
    for transform in q.transforms:
        z = transform(z)
    return z


def rsample_from_noise(q: Distribution, eps: torch.Tensor) -> torch.Tensor:
    """A reparameterised sample of q driven by eps ~ N(0, I), shape sample_shape + batch + event.

    Families without a registered map draw with their own ``rsample`` (torch's global generator;
    ``sample``, without gradients, for a family that has no ``rsample``, e.g. a mixture prior)."""
    for cls in type(q).__mro__:
        if cls in _REPARAMETERIZATIONS:
            return _REPARAMETERIZATIONS[cls](q, eps)
    sample_shape = eps.shape[:eps.dim() - len(q.batch_shape) - len(q.event_shape)]
    return q.rsample(sample_shape) if q.has_rsample else q.sample(sample_shape)


# -- optional closed forms -------------------------------------------------------------------------
def closed_form_kl(q: Distribution, p: Distribution) -> torch.Tensor | None:
    """KL(q || p) from ``torch.distributions.kl_divergence`` where a closed form is registered, else None."""
    try:
        return kl_divergence(q, p)
    except NotImplementedError:
        return None


def closed_form_moments(q: Distribution) -> tuple[torch.Tensor, torch.Tensor] | None:
    """(mean, variance) of q where the family has them in closed form, else None."""
    try:
        return q.mean, q.variance
    except NotImplementedError:
        return None


def prior_quantiles(p_z: Distribution, probs: torch.Tensor) -> torch.Tensor | None:
    """Per-dimension quantiles F_d^{-1}(p) of a factorised prior p(z) = prod_d p_d(z_d), shape
    (len(probs), D) in float64, or None where the prior has no inverse CDF (e.g. a mixture)."""
    base = p_z.base_dist if isinstance(p_z, Independent) and p_z.reinterpreted_batch_ndims == 1 else None
    if base is None or len(base.batch_shape) != 1:
        return None
    try:
        quantiles = base.icdf(probs.double()[:, None].to(base.mean.device))  # broadcasts over the D dims
    except (NotImplementedError, AttributeError):
        return None
    return quantiles.double().expand(len(probs), base.batch_shape[0])


class LatentVariableModel:
    """The contract's methods for a model with L stochastic layers, written once over its factors.

    A subclass (``models.vae.VAE``, ``models.conditional.LabelledVAE``) provides ``posterior(x)``
    (q(z_1|x)), ``prior()`` (p(z_L)), ``likelihood(z_1)`` (p(x|z_1)), ``decoder``,
    ``likelihood_module``, ``latent_dim`` (D_1), ``parameters()`` and the sequences
    ``posterior_layers`` (l-th: z_l -> q(z_{l+1}|z_l)) and ``prior_layers`` (l-th: z_{l+1} ->
    p(z_l|z_{l+1})), empty for one layer.
    """

    # what a subclass provides (annotations only: no class attributes to shadow nn.Module's submodules)
    encoder: Any
    decoder: Any
    likelihood_module: Any
    posterior_layers: Any
    prior_layers: Any
    posterior: Callable[[torch.Tensor], Distribution]
    prior: Callable[[], Distribution]
    likelihood: Callable[[torch.Tensor], Distribution]
    parameters: Callable[[], Any]

    @property
    def latent_dims(self) -> tuple[int, ...]:
        """(D_1, ..., D_L), bottom layer first."""
        return (getattr(self, "latent_dim"), *(m.latent_dim for m in self.posterior_layers))  # noqa: B009 (a property or an attribute)

    @property
    def noise_dim(self) -> int:
        """sum_l D_l: standard-normal numbers per draw of z (the trainer draws eps of this size)."""
        return sum(self.latent_dims)

    @property
    def num_layers(self) -> int:
        return 1 + len(self.posterior_layers)

    # -- the contract -------------------------------------------------------------------------------
    def _draw(self, x: torch.Tensor, num_samples: int, noise) -> tuple[list, list]:
        """z_l ~ q(z_l | z_{l-1}) layer by layer; returns (z, q) lists, z_l (K, B, D_l)."""
        like = next(self.parameters())
        eps = standard_normal_noise(noise, num_samples, x.shape[0], self.noise_dim, like)
        eps_layers = eps.split(self.latent_dims, dim=-1)
        q = self.posterior(x)  # batch (B,)
        zs, qs = [rsample_from_noise(q, eps_layers[0])], [q]
        for layer, e in zip(self.posterior_layers, eps_layers[1:]):
            q = layer(zs[-1])  # batch (K, B)
            zs.append(rsample_from_noise(q, e))
            qs.append(q)
        return zs, qs

    def sample_posterior(self, x: torch.Tensor, num_samples: int, noise=None) -> tuple:
        """z ~ q(z|x): L tensors (K, B, D_l). ``noise``: see ``models/base.py``."""
        return tuple(self._draw(x, num_samples, noise)[0])

    def log_q(self, z: tuple, x: torch.Tensor) -> torch.Tensor:
        """log q(z|x) = log q(z_1|x) + sum_l log q(z_l|z_{l-1}), (K, B) in nats."""
        log_q = self.posterior(x).log_prob(z[0])
        for layer, parent, z_l in zip(self.posterior_layers, z[:-1], z[1:]):
            log_q = log_q + layer(parent).log_prob(z_l)
        return log_q

    def _prior_terms(self, z) -> tuple[list, Distribution]:
        """[log p(z_l|z_{l+1}) for l < L] and p(z_L)."""
        return [layer(z[i + 1]).log_prob(z[i]) for i, layer in enumerate(self.prior_layers)], self.prior()

    def log_prior(self, z: tuple) -> torch.Tensor:
        """log p(z) = log p(z_L) + sum_{l<L} log p(z_l|z_{l+1}), (K, B) in nats."""
        lower, p_top = self._prior_terms(z)
        log_p = p_top.log_prob(z[-1])
        for term in lower:
            log_p = log_p + term
        return log_p

    def log_likelihood(self, x: torch.Tensor, z: tuple) -> torch.Tensor:
        """log p(x|z_1), (K, B) in nats."""
        return self.likelihood(z[0]).log_prob(x)

    def trace(self, x: torch.Tensor, num_samples: int = 1, noise=None, kl: str = "none") -> Trace:
        """z ~ q(z|x) and every log-density at it, from one pass (see ``Trace``).

        ``kl="analytic"``: the top layer's KL(q(z_L|z_{L-1}) || p(z_L)) in closed form where one is
        registered (given the drawn z_{L-1}; for L = 1 that is the exact KL(q(z|x) || p(z))), every
        other layer by its Monte Carlo term log q(z_l|.) - log p(z_l|z_{l+1}) (p's parent is drawn
        after z_l, so no closed form applies); ``"mc"``: log q(z|x) - log p(z) for all layers;
        ``"none"``: no KL.
        """
        if kl not in ("none", "analytic", "mc"):
            raise ValueError(f"kl must be 'analytic', 'mc' or 'none', got {kl!r}")
        zs, qs = self._draw(x, num_samples, noise)
        log_p_x_given_z = self.likelihood(zs[0]).log_prob(x)  # (K, B)
        log_q_layers = [q.log_prob(z) for q, z in zip(qs, zs)]  # each (K, B)
        lower, p_top = self._prior_terms(zs)
        log_p_top = p_top.log_prob(zs[-1])
        log_q_z, log_p_z = log_q_layers[0], log_p_top
        for term in log_q_layers[1:]:
            log_q_z = log_q_z + term
        for term in lower:
            log_p_z = log_p_z + term
        kl_term = None
        if kl == "mc":
            kl_term = log_q_z - log_p_z
        elif kl == "analytic":
            top = closed_form_kl(qs[-1], p_top)
            kl_term = log_q_layers[-1] - log_p_top if top is None else top
            for log_q_l, log_p_l in zip(log_q_layers[:-1], lower):
                kl_term = kl_term + (log_q_l - log_p_l)
        z_means = []
        for q, z in zip(qs, zs):
            moments = closed_form_moments(q)
            z_means.append(z if moments is None else moments[0])
        return Trace(tuple(zs), log_p_x_given_z, log_p_z, log_q_z, kl_term, tuple(z_means))

    def log_weights(self, x: torch.Tensor, num_samples: int, noise=None) -> torch.Tensor:
        """log w_k = log p(x|z_k) + log p(z_k) - log q(z_k|x), z_k ~ q(z|x), in nats. Returns (K, B)."""
        t = self.trace(x, num_samples, noise)
        return t.log_p_x_given_z + (t.log_p_z - t.log_q_z)

    # -- generation and summaries -------------------------------------------------------------------
    @torch.no_grad()
    def sample_latents(self, n: int, generator: torch.Generator | None = None) -> tuple:
        """Ancestral z_L ~ p(z_L) (exactly, through ``generator`` only: ``mixtures.sample_with_generator``,
        a mixture prior draws the component, then the Gaussian), then z_l ~ p(z_l|z_{l+1}) with noise
        N(0, I) from ``generator``, top-down. Returns L tensors (n, D_l), bottom layer first."""
        like = next(self.parameters())
        zs = [sample_with_generator(self.prior(), n, generator)]  # (n, D_L)
        for layer, dim in zip(reversed(self.prior_layers), reversed(self.latent_dims[:-1])):
            eps = torch.randn(n, dim, generator=generator, device=like.device, dtype=like.dtype)
            zs.insert(0, rsample_from_noise(layer(zs[0]), eps))
        return tuple(zs)

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None, mean: bool = True) -> torch.Tensor:
        """n ancestral draws decoded to E[x|z_1] (``mean=True``) or to x ~ p(x|z_1). Returns (n, num_dims)."""
        params = self.decoder(self.sample_latents(n, generator)[0])
        if mean:
            return self.likelihood_module.mean(params)
        return self.likelihood_module(params).sample()

    @torch.no_grad()
    def decode_mean(self, z_top: torch.Tensor) -> torch.Tensor | None:
        """E[x|z_1] with z_l = E[z_l|z_{l+1}] below a top-layer z_L (..., D_L); for L = 1 just E[x|z].
        None when a prior layer has no closed-form mean."""
        z = z_top
        for layer in reversed(self.prior_layers):
            moments = closed_form_moments(layer(z))
            if moments is None:
                return None
            z = moments[0]
        return self.likelihood_module.mean(self.decoder(z))

    @torch.no_grad()
    def posterior_moments(self, x: torch.Tensor, num_samples: int = MC_SAMPLES,
                          generator: torch.Generator | None = None) -> list[tuple]:
        """Per layer (mean, variance, how) of the marginal q(z_l|x), each (B, D_l).

        Layer 1 uses q(z_1|x)'s closed-form mean and variance where the family has them (how =
        "closed form"); otherwise, and for layers above, ``num_samples`` draws z ~ q(z|x) estimate
        them, Rao-Blackwellised where q(z_l|z_{l-1}) has a closed-form mean and variance:
        E[z_l|x] = E_q[E[z_l|z_{l-1}]], Var = E_q[Var(z_l|z_{l-1})] + Var_q(E[z_l|z_{l-1}])
        (how = "Monte Carlo, N samples").
        """
        first = closed_form_moments(self.posterior(x))
        if first is not None and self.num_layers == 1:
            return [(first[0], first[1], "closed form")]
        zs, qs = self._draw(x, num_samples, generator)
        how = f"Monte Carlo, {num_samples} samples"
        out = [(first[0], first[1], "closed form")] if first is not None else \
            [(zs[0].mean(0), zs[0].var(0, unbiased=False), how)]
        for z, q in zip(zs[1:], qs[1:]):
            m = closed_form_moments(q)
            if m is None:
                out.append((z.mean(0), z.var(0, unbiased=False), how))
            else:
                out.append((m[0].mean(0), m[1].mean(0) + m[0].var(0, unbiased=False), how))
        return out

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """E[x | z_1 = E_q[z_1|x]]: the reconstruction figure shows this. Returns (B, num_dims)."""
        first = closed_form_moments(self.posterior(x))
        mean = first[0] if first is not None else self.posterior_moments(x)[0][0]
        return self.likelihood_module.mean(self.decoder(mean))
