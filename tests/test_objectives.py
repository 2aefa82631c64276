"""Bounds against independent computations: closed forms, Monte Carlo and each other."""

import math

import torch
import torch.nn.functional as F
from torch.distributions import Independent, Normal

from aevb.config import ModelConfig
from aevb.data import DataInfo
from aevb.inference.objectives import elbo, iwae
from aevb.models.vae import build_model


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


def test_iwae_averaged_over_seeds_does_not_decrease_in_k():
    model = tiny_model()
    x = binary_batch(n=4)
    repeats = 400
    xr = x.repeat(repeats, 1)  # independent draws for each copy of each example
    means, ses = [], []
    with torch.no_grad():
        for k in (1, 2, 5, 20, 100):
            torch.manual_seed(k)
            v = iwae(model, xr, num_samples=k).value.double().reshape(repeats, -1).mean(1)  # (repeats,)
            means.append(float(v.mean()))
            ses.append(float(v.std() / math.sqrt(repeats)))
    for k in range(len(means) - 1):
        assert means[k + 1] > means[k] - 2 * max(ses[k], ses[k + 1]), (means, ses)
    assert means[-1] > means[0] + 5 * ses[0], (means, ses)  # and it really rises


# -- factor analysis: a linear-Gaussian VAE whose log p(x) is known in closed form -------------

def factor_analysis_vae(w, b, sigma, enc_matrix, enc_shift, enc_log_var):
    """p(z) = N(0, I), p(x|z) = N(W z + b, sigma^2 I); q(z|x) = N(A x + c, diag(exp(log_var)))."""
    from aevb.models.decoders import Decoder
    from aevb.models.encoders import GaussianEncoder
    from aevb.models.likelihoods import GaussianLikelihood
    from aevb.models.priors import StandardNormalPrior
    from aevb.models.vae import VAE

    num_dims, latent_dim = w.shape
    enc = torch.nn.Linear(num_dims, 2 * latent_dim)
    dec = torch.nn.Linear(latent_dim, num_dims)
    with torch.no_grad():
        enc.weight.copy_(torch.cat([enc_matrix, torch.zeros(latent_dim, num_dims)]))
        enc.bias.copy_(torch.cat([enc_shift, enc_log_var]))
        dec.weight.copy_(w)
        dec.bias.copy_(b)
    return VAE(GaussianEncoder(enc, latent_dim), Decoder(dec), StandardNormalPrior(latent_dim),
               GaussianLikelihood(num_dims, sigma=str(sigma), mean_link="identity"))


def factor_analysis_problem(seed=0, num_dims=5, latent_dim=2, sigma=0.5):
    g = torch.Generator().manual_seed(seed)
    w, b = torch.randn(num_dims, latent_dim, generator=g), torch.randn(num_dims, generator=g)
    x = (w @ torch.randn(latent_dim, 6, generator=g)).T + b + sigma * torch.randn(6, num_dims, generator=g)
    cov = (w @ w.T + sigma**2 * torch.eye(num_dims)).double()
    from scipy.stats import multivariate_normal

    exact = torch.tensor(multivariate_normal(b.double().numpy(), cov.numpy()).logpdf(x.double().numpy()))
    # exact posterior: precision M = I + W^T W / sigma^2, mean M^-1 W^T (x - b) / sigma^2
    precision = torch.eye(latent_dim) + w.T @ w / sigma**2
    a = torch.linalg.solve(precision, w.T) / sigma**2
    return w, b, sigma, x, exact, precision, a


def test_linear_gaussian_vae_iwae_5000_is_within_005_nats_of_exact_log_p_and_elbo_is_below():
    w, b, sigma, x, exact, precision, a = factor_analysis_problem()
    # approximate posterior: the exact mean, diagonal variances 2 / M_jj (twice the mean-field ones);
    # its ELBO gap KL(q || p(z|x)) is at least latent_dim (1 - log 2) / 2 = 0.31 nats
    model = factor_analysis_vae(w, b, sigma, a, -a @ b, math.log(2.0) - torch.log(torch.diagonal(precision)))
    torch.manual_seed(0)
    with torch.no_grad():
        bound_5000 = iwae(model, x, num_samples=5000).value.double()
        elbo_value = elbo(model, x, num_samples=5000).value.double()
    assert (bound_5000 - exact).abs().max() < 0.05, (bound_5000, exact)
    assert (elbo_value < exact - 0.2).all(), (elbo_value, exact)  # a real gap that the IWAE bound closes
    assert (bound_5000 > elbo_value).all()


def test_linear_gaussian_vae_with_exact_posterior_has_every_log_weight_equal_to_log_p():
    w, b, sigma, x, exact, precision, a = factor_analysis_problem(seed=1)
    cov = torch.linalg.inv(precision)
    rotate = torch.linalg.eigh(cov)  # diagonalise the posterior covariance by rotating z
    r = rotate.eigenvectors  # z = r u, u ~ N(., diag(eigenvalues)); the prior is rotation invariant
    model = factor_analysis_vae(w @ r, b, sigma, r.T @ a, -r.T @ a @ b, torch.log(rotate.eigenvalues))
    torch.manual_seed(0)
    with torch.no_grad():
        log_w = model.log_weights(x, 64).double()  # (K, B)
        mc_elbo = elbo(model, x, num_samples=1, kl="mc").value.double()
    torch.testing.assert_close(log_w, exact.expand_as(log_w), atol=2e-4, rtol=0)
    torch.testing.assert_close(mc_elbo, exact, atol=2e-4, rtol=0)


def test_elbo_with_l_samples_averages_l_single_sample_terms():
    model = tiny_model()
    x = binary_batch(n=3)
    torch.manual_seed(11)
    b4 = elbo(model, x, num_samples=4, kl="mc")
    torch.manual_seed(11)
    q_z, p_z = model.posterior(x), model.prior()
    z = q_z.rsample((4,))
    by_hand = (model.likelihood(z).log_prob(x) + p_z.log_prob(z) - q_z.log_prob(z)).mean(0)
    torch.testing.assert_close(b4.value, by_hand)


def test_iwae_is_a_stable_log_mean_exp_of_the_log_weights():
    model = tiny_model()
    x = binary_batch(n=3)
    torch.manual_seed(4)
    bound = iwae(model, x, num_samples=7).value
    torch.manual_seed(4)
    log_w = model.log_weights(x, 7).double()
    shift = log_w.max(0).values
    by_hand = shift + torch.log(torch.exp(log_w - shift).mean(0))
    torch.testing.assert_close(bound.double(), by_hand, rtol=0, atol=1e-4)


def test_unknown_kl_and_beta_for_iwae_are_refused():
    import pytest

    model = tiny_model()
    with pytest.raises(ValueError, match="analytic' or 'mc"):
        elbo(model, binary_batch(), kl="exact")
    with pytest.raises(ValueError, match="no KL weight"):
        iwae(model, binary_batch(), beta=0.5)
