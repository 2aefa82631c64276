"""Bounds against independent computations: closed forms, Monte Carlo and each other."""

import math

import torch
import torch.nn.functional as F
from torch.distributions import Independent, Normal

from aevb.config import ModelConfig
from aevb.data import DataInfo
from aevb.model import build_model
from aevb.objectives import elbo, iwae


def tiny_model(latent_dim=3, num_dims=12, seed=0):
    torch.manual_seed(seed)
    info = DataInfo(name="t", shape=(num_dims,), num_dims=num_dims, support="binary", binarization="none")
    return build_model(ModelConfig(latent_dim=latent_dim, hidden=[16]), info)


def binary_batch(n=7, d=12, seed=1):
    return torch.bernoulli(torch.full((n, d), 0.4), generator=torch.Generator().manual_seed(seed))


def test_bernoulli_reconstruction_term_is_summed_bce_with_logits():
    model = tiny_model()
    x = binary_batch()
    z = torch.randn(7, 3)
    logits = model.decoder(z)
    log_p = model.likelihood(z).log_prob(x)
    p = torch.sigmoid(logits)
    by_hand = (x * torch.log(p) + (1 - x) * torch.log1p(-p)).sum(-1)
    bce_sum = F.binary_cross_entropy_with_logits(logits, x, reduction="none").sum(-1)
    torch.testing.assert_close(log_p, by_hand, rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(log_p, -bce_sum)


def test_iwae_with_one_sample_equals_mc_elbo_on_the_same_noise():
    model = tiny_model()
    x = binary_batch()
    torch.manual_seed(5)
    a = iwae(model, x, num_samples=1).value
    torch.manual_seed(5)
    b = elbo(model, x, num_samples=1, kl="mc").value
    torch.testing.assert_close(a, b)


def test_analytic_kl_matches_monte_carlo_within_four_standard_errors():
    model = tiny_model()
    x = binary_batch(n=3)
    q_z, p_z = model.posterior(x), model.prior()
    analytic = torch.distributions.kl_divergence(q_z, p_z)
    z = q_z.sample((100_000,))
    samples = (q_z.log_prob(z) - p_z.log_prob(z)).double()
    mc, se = samples.mean(0), samples.std(0) / math.sqrt(z.shape[0])
    assert ((analytic.double() - mc).abs() < 4 * se).all(), (analytic, mc, se)


def test_analytic_kl_matches_closed_form_for_diagonal_gaussians():
    mu, log_var = torch.randn(5, 4), torch.randn(5, 4)
    q = Independent(Normal(mu, torch.exp(0.5 * log_var)), 1)
    p = Independent(Normal(torch.zeros(4), torch.ones(4)), 1)
    closed = 0.5 * (mu.pow(2) + log_var.exp() - 1 - log_var).sum(-1)
    torch.testing.assert_close(torch.distributions.kl_divergence(q, p), closed)


def test_elbo_with_beta_reweights_only_the_kl_term():
    model = tiny_model()
    x = binary_batch()
    torch.manual_seed(3)
    b1 = elbo(model, x, beta=1.0)
    torch.manual_seed(3)
    b2 = elbo(model, x, beta=0.5)
    torch.testing.assert_close(b2.value, b1.recon - 0.5 * b1.kl)
    torch.testing.assert_close(b1.value, b1.recon - b1.kl)
