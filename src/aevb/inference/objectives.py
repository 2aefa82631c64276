"""Training and evaluation bounds: per-example lower bounds on log p(x), in nats (higher is better).

Every objective is ``(model, x, *, num_samples, ...) -> Bound`` where ``Bound.value`` has shape
(B,). The trainer reduces once (``loss = -bound.value.mean()``); nothing here averages over
examples or pixels, so the KL is never silently reweighted.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch


class Bound(NamedTuple):
    """A per-example bound and the terms it is made of, each (B,) in nats.

    ``recon`` is E_q[log p(x|z)] and ``kl`` is KL(q(z|x) || p(z)) for the ELBO; for IWAE they
    are the same quantities under q (reported for monitoring only, not part of the bound).
    """

    value: torch.Tensor
    recon: torch.Tensor
    kl: torch.Tensor


def elbo(model, x: torch.Tensor, *, num_samples: int = 1, kl: str = "analytic", beta: float = 1.0,
         noise=None) -> Bound:
    """ELBO(x) = E_q[log p(x|z)] - beta * KL(q(z|x) || p(z)), per example, in nats.

    E_q is estimated with L = ``num_samples`` reparameterised draws of z (all layers). With
    ``kl="analytic"`` the KL uses the closed form wherever a layer has one (AEVB eq. 7, estimator B;
    for a one-layer model with the N(0, I) prior the whole KL, for L layers the top layer's given
    z_{L-1}) and Monte Carlo log q - log p elsewhere; with ``kl="mc"`` it is the Monte Carlo
    estimate log q(z|x) - log p(z) on the same draws (AEVB eq. 6, estimator A). Both are unbiased
    estimates of the same ELBO; closed forms usually have lower variance. ``beta != 1`` is not an
    ELBO (beta > 1 is a looser lower bound on log p(x), beta < 1 is no bound); callers label it so.
    KL warm-up is the trainer's job: it passes a beta rising from 0 to its final value.

    Args:
        model: a model with the contract of ``aevb.models.base`` (``trace``).
        x: (B, num_dims) data.
        num_samples: L, draws of z per example.
        kl: "analytic" or "mc".
        beta: weight of the KL term.
        noise: a torch.Generator, eps (L, B, noise_dim) or None (see ``aevb.models.base``).

    Returns:
        Bound with value, recon and kl, each (B,), in nats.

    References: Kingma & Welling (2014), Auto-Encoding Variational Bayes, eqs. 6-7.
    """
    if kl not in ("analytic", "mc"):
        raise ValueError(f"kl must be 'analytic' or 'mc', got {kl!r}")
    t = model.trace(x, num_samples, noise, kl=kl)
    recon = t.log_p_x_given_z.mean(0)
    kl_term = t.kl if t.kl.dim() == 1 else t.kl.mean(0)  # (B,): exact, or the mean over the L draws
    return Bound(recon - beta * kl_term, recon, kl_term)


def iwae(model, x: torch.Tensor, *, num_samples: int = 50, kl: str = "analytic", beta: float = 1.0,
         noise=None) -> Bound:
    """IWAE bound L_K(x) = log (1/K) sum_k p(x, z_k) / q(z_k|x), z_k ~ q(z|x), per example, in nats.

    L_1 is the Monte Carlo ELBO (AEVB eq. 6) on the same draws; E[L_K] <= E[L_{K+1}] <= log p(x)
    and L_K -> log p(x) as K grows. The log-mean-exp over k is computed stably with logsumexp.
    ``kl`` and ``beta`` are accepted for a common signature; beta must be 1. ``recon`` and ``kl``
    in the result are plain Monte Carlo averages under q, for monitoring only (not the bound's terms).
    ``noise`` as for ``elbo``.

    References: Burda, Grosse & Salakhutdinov (2016), Importance Weighted Autoencoders, eq. 8.
    """
    if beta != 1.0:
        raise ValueError("the iwae bound has no KL weight; use objective elbo for beta != 1")
    t = model.trace(x, num_samples, noise)
    log_ratio = t.log_p_z - t.log_q_z  # (K, B)
    log_w = t.log_p_x_given_z + log_ratio
    value = torch.logsumexp(log_w, dim=0) - math.log(num_samples)
    return Bound(value, t.log_p_x_given_z.detach().mean(0), -log_ratio.detach().mean(0))


OBJECTIVES = {"elbo": elbo, "iwae": iwae}
