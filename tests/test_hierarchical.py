"""Models with L >= 2 stochastic layers against closed forms and against the one-layer code paths."""

import math

import pytest
import torch
from torch.distributions import MultivariateNormal

from aevb.config import ConfigError, ModelConfig, RunConfig, update, validate
from aevb.data import DataInfo
from aevb.inference.importance import importance_sample
from aevb.models.vae import build_model

X_DIM, Z1, Z2 = 3, 2, 1


def linear_gaussian_model():
    """z2 ~ N(0, 1), z1 | z2 ~ N(A z2 + a, S1), x | z1 ~ N(B z1 + b, s^2 I), all linear; q(z1|x) and
    q(z2|z1) are the exact posteriors' mean maps with their variances inflated by 1.3 (and q(z1|x)'s
    covariance cut to its diagonal), so the ELBO is strictly below log p(x).

    Returns (model, exact log p(x) as a function of x)."""
    info = DataInfo(name="t", shape=(X_DIM,), num_dims=X_DIM, support="real", binarization="none")
    cfg = ModelConfig(latent_dims=[Z1, Z2], hidden=[], stochastic_hidden=[], likelihood="gaussian", sigma="0.5",
                      init_bias_from_data=False)
    model = build_model(cfg, info).double()
    g = torch.Generator().manual_seed(0)
    A, a = torch.randn(Z1, Z2, generator=g, dtype=torch.float64), torch.randn(Z1, generator=g, dtype=torch.float64)
    s1 = torch.tensor([0.6, 0.8], dtype=torch.float64)
    B, b = torch.randn(X_DIM, Z1, generator=g, dtype=torch.float64), torch.randn(X_DIM, generator=g, dtype=torch.float64)
    s = 0.5
    cov_z1 = A @ A.T + torch.diag(s1**2)
    # exact p(z1|x) = N(P^-1 (cov_z1^-1 a + B^T (x - b) / s^2), P^-1), P = cov_z1^-1 + B^T B / s^2
    post_cov = torch.linalg.inv(torch.linalg.inv(cov_z1) + B.T @ B / s**2)
    m_x, m_0 = post_cov @ B.T / s**2, post_cov @ torch.linalg.solve(cov_z1, a) - post_cov @ B.T @ b / s**2
    # exact p(z2|z1) = N(c (z1 - a), v), 1/v = 1 + A^T S1^-1 A, c = v A^T S1^-1
    v = 1 / (1 + (A.T @ torch.diag(1 / s1**2) @ A)).squeeze()
    c = v * A.T @ torch.diag(1 / s1**2)
    with torch.no_grad():
        def set_linear(layer, weight_mu, bias_mu, var):
            lin = layer.net[0] if hasattr(layer.net, "__getitem__") else layer.net
            d = weight_mu.shape[0]
            lin.weight.zero_()
            lin.weight[:d] = weight_mu
            lin.bias[:d] = bias_mu
            lin.bias[d:] = torch.log(var)
        set_linear(model.encoder, m_x, m_0, 1.3 * torch.diagonal(post_cov))
        set_linear(model.posterior_layers[0], c, -c @ a, 1.3 * v.reshape(1))
        set_linear(model.prior_layers[0], A, a, s1**2)
        model.decoder.net[0].weight.copy_(B)
        model.decoder.net[0].bias.copy_(b)
    marginal = MultivariateNormal(B @ a + b, B @ cov_z1 @ B.T + s**2 * torch.eye(X_DIM, dtype=torch.float64))
    return model, marginal.log_prob


def test_two_layer_linear_gaussian_l5000_is_within_0_05_nats_of_the_closed_form_and_the_elbo_below_it():
    model, exact_log_px = linear_gaussian_model()
    x = torch.randn(20, X_DIM, generator=torch.Generator().manual_seed(1), dtype=torch.float64) * 2
    stats = importance_sample(model, x, k=5000, seed=3, progress=False, workers=1)
    exact = exact_log_px(x)
    assert (stats["log_px"] - exact).abs().max() < 0.05, (stats["log_px"] - exact)
    gap = exact - stats["elbo"]
    assert (gap > 0.01).all(), gap  # q is not the posterior: the ELBO is strictly below log p(x)
    assert (stats["log_px"] > stats["elbo"]).all()


def test_two_layer_elbo_with_the_top_layers_closed_form_kl_agrees_with_the_monte_carlo_kl():
    model, _ = linear_gaussian_model()
    x = torch.randn(4, X_DIM, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    from aevb.inference.objectives import elbo

    n = 20000
    analytic = elbo(model, x, num_samples=n, kl="analytic", noise=torch.Generator().manual_seed(5))
    t = model.trace(x, n, torch.Generator().manual_seed(5), kl="mc")
    mc_kl = t.kl  # (n, B)
    se = mc_kl.std(0) / math.sqrt(n)
    assert ((analytic.kl - mc_kl.mean(0)).abs() < 4 * se + 1e-9).all(), (analytic.kl, mc_kl.mean(0), se)


def test_ancestral_sampling_matches_the_closed_form_marginal_of_x():
    model, _ = linear_gaussian_model()
    x = model.sample(20000, torch.Generator().manual_seed(0), mean=True)  # E[x|z1] for z1 ~ p(z1)
    dec = model.decoder.net[0]
    torch.testing.assert_close(x.mean(0), dec.bias + dec.weight @ model.prior_layers[0].net[0].bias[:Z1],
                               atol=0.05, rtol=0)


def test_latent_dims_replace_latent_dim_and_bad_layer_settings_are_refused_together():
    cfg = update(RunConfig(), {"model": {"latent_dims": "100,50", "stochastic_hidden": "100,100"}})
    assert validate(cfg).model.latent_dim == 100
    bad = update(RunConfig(), {"model": {"latent_dims": "100", "stochastic_hidden": "100,0"}})
    with pytest.raises(ConfigError) as e:
        validate(bad)
    assert "model.latent_dims = [100]: allowed values are two or more positive sizes" in str(e.value)
    assert "model.stochastic_hidden = [100, 0]" in str(e.value)


def test_iwae_mnist_2layer_preset_is_the_papers_architecture_and_protocol():
    from aevb.config import read_preset

    two, one = read_preset("iwae-mnist-2layer"), read_preset("iwae-mnist")
    assert two["model"]["latent_dims"] == [100, 50]
    assert two["model"]["hidden"] == [200, 200] and two["model"]["stochastic_hidden"] == [100, 100]
    assert two["model"]["activation"] == "tanh"
    assert two["data"] == one["data"] and two["train"] == one["train"] and two["objective"] == one["objective"]
    cfg = validate(update(RunConfig(), two))
    info = DataInfo(name="mnist", shape=(28, 28), num_dims=784, support="binary", binarization="dynamic")
    model = build_model(cfg.model, info)
    assert model.latent_dims == (100, 50)
    sizes = {n: tuple(p.shape) for n, p in model.named_parameters()}
    assert sizes["encoder.net.0.weight"] == (200, 784) and sizes["encoder.net.4.weight"] == (200, 200)
    assert sizes["posterior_layers.0.net.0.weight"] == (100, 100) and sizes["posterior_layers.0.net.4.weight"] == (100, 100)
    assert sizes["prior_layers.0.net.0.weight"] == (100, 50) and sizes["prior_layers.0.net.4.weight"] == (200, 100)
    assert sizes["decoder.net.4.weight"] == (784, 200)


def test_an_inactive_upper_layer_counts_no_active_units_even_with_few_importance_samples():
    from aevb.inference.evaluate import evaluate

    info = DataInfo(name="t", shape=(12,), num_dims=12, support="binary", binarization="none")
    torch.manual_seed(0)
    model = build_model(ModelConfig(latent_dims=[4, 3], hidden=[16], stochastic_hidden=[8]), info)
    with torch.no_grad():  # q(z2|z1) = N(0, I) whatever z1: the second layer carries nothing
        last = model.posterior_layers[0].net[-1]
        last.weight.zero_()
        last.bias.zero_()
    x = torch.bernoulli(torch.full((200, 12), 0.3), generator=torch.Generator().manual_seed(0))
    r = evaluate(model, x, info, k=20, progress=False, workers=1)
    # draws of z2 have variance 1: their average over K = 20 would vary by 1/20 = 0.05 > 0.01 per unit
    assert r["active_units_per_layer"][1] == 0
    assert r["active_units_per_layer"][0] == r["active_units"]
