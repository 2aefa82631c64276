"""Importance-weighted imputation of missing entries (MIWAE's estimator).

For an example with observed entries x_obs and missing x_mis, the posterior-predictive mean is

    E[x_mis | x_obs] = integral E[x_mis | z] p(z | x_obs) dz
                    ~= sum_k w~_k E[x_mis | z_k],   z_k ~ q(z | x_obs),
    w~_k = w_k / sum_j w_j,   w_k = p(x_obs | z_k) p(z_k) / q(z_k | x_obs),

a self-normalised importance sampling estimate (consistent as K grows). E[x_mis | z] is the
likelihood's mean (``Likelihood.mean``); the likelihood factorises over dimensions given z, so
the missing entries' mean does not depend on x_obs given z. Observed entries are kept as they are.

References: Mattei & Frellsen (2019), MIWAE: Deep generative modelling and imputation of
incomplete data sets, ICML, section 3 (eq. 11).
"""

from __future__ import annotations

import torch
from tqdm import tqdm

from aevb.models.posteriors import rsample_and_log_prob


@torch.no_grad()
def impute(model, x: torch.Tensor, *, k: int = 1000, seed: int = 1234, memory_mb: int = 256,
           progress: bool = True) -> torch.Tensor:
    """x (N, D) with NaN at the missing entries -> x with each NaN replaced by its importance-weighted
    posterior-predictive mean (module docstring), in the model's units.

    Args:
        model: a ``VAE`` built for data with missing entries (``data.missing = mask``).
        x: (N, num_dims) data; NaN marks a missing entry.
        k: K, importance samples per example.
        seed: seeds the noise; the same seed gives the same imputations.
        memory_mb: budget for the (K, B, P * D) decoder outputs of one chunk of examples.
        progress: show a tqdm bar.

    Returns:
        (N, num_dims) float tensor on the CPU without NaN.
    """
    if k < 1:
        raise ValueError(f"k (importance samples) must be >= 1, got {k}")
    device = next(model.parameters()).device
    lik = model.likelihood_module
    per_example = k * lik.params_per_dim * lik.num_dims * 4 * 3  # params, means, products (float32)
    chunk = max(1, (memory_mb << 20) // max(1, per_example))
    generator = torch.Generator(device=device).manual_seed(seed)
    out = []
    for i in tqdm(range(0, len(x), chunk), desc=f"impute K={k}", disable=not progress, leave=False):
        x_b = x[i:i + chunk].to(device)
        q_z = model.posterior(x_b)
        eps = torch.randn(k, len(x_b), model.latent_dim, generator=generator, device=device)
        z, log_q = rsample_and_log_prob(q_z, eps)  # (K, B, D), (K, B)
        params = model.decoder(z)
        log_w = lik(params).log_prob(x_b) + model.prior().log_prob(z) - log_q  # (K, B): observed entries only
        weights = torch.softmax(log_w, dim=0)  # self-normalised
        x_hat = (weights.unsqueeze(-1) * lik.mean(params)).sum(0)  # (B, num_dims)
        out.append(torch.where(torch.isnan(x_b), x_hat, x_b).cpu())
    return torch.cat(out) if out else x.clone()
