"""Each likelihood's log_prob against a hand-written formula, quadrature or a second library."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy import integrate

from aevb.config import ModelConfig
from aevb.data import DataInfo
from aevb.models.likelihoods import (
    BernoulliLikelihood,
    CategoricalLikelihood,
    ContinuousBernoulliLikelihood,
    DataMismatchError,
    GaussianLikelihood,
    LaplaceLikelihood,
    build_likelihood,
)

D = 6


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def test_bernoulli_minus_log_p_is_hand_written_sum_and_summed_bce_with_logits():
    logits = torch.randn(4, D, generator=gen())
    x = torch.bernoulli(torch.full((4, D), 0.3), generator=gen(1))
    log_p = BernoulliLikelihood(D)(logits).log_prob(x)
    p = torch.sigmoid(logits)
    by_hand = (x * torch.log(p) + (1 - x) * torch.log(1 - p)).sum(-1)
    torch.testing.assert_close(log_p, by_hand, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(-log_p, F.binary_cross_entropy_with_logits(logits, x, reduction="none").sum(-1))


@pytest.mark.parametrize("link", ["identity", "sigmoid"])
def test_gaussian_with_fixed_sigma_is_sse_over_two_sigma_squared_plus_constants(link):
    sigma = 0.3
    params = torch.randn(5, D, generator=gen()).double()
    x = torch.rand(5, D, generator=gen(1)).double()
    lik = GaussianLikelihood(D, sigma=str(sigma), mean_link=link)
    mu = torch.sigmoid(params) if link == "sigmoid" else params
    expected = ((x - mu) ** 2).sum(-1) / (2 * sigma**2) + D / 2 * math.log(2 * math.pi * sigma**2)
    torch.testing.assert_close(-lik(params).log_prob(x), expected)
    torch.testing.assert_close(lik.mean(params), mu)


def normal_nll_by_hand(x, mu, sigma):
    return (0.5 * ((x - mu) / sigma) ** 2 + torch.log(sigma) + 0.5 * math.log(2 * math.pi)).sum(-1)


def test_gaussian_with_predicted_log_variance_matches_closed_form_and_layout():
    min_sigma = 1e-3
    lik = GaussianLikelihood(D, sigma="predicted", min_sigma=min_sigma, mean_link="sigmoid")
    assert lik.params_per_dim == 2
    params = torch.randn(3, 2 * D, generator=gen()).double()
    x = torch.rand(3, D, generator=gen(1)).double()
    mu = torch.sigmoid(params[:, :D])  # first D: mean parameters
    sigma = min_sigma + torch.exp(0.5 * params[:, D:])  # next D: log-variance
    torch.testing.assert_close(lik(params).log_prob(x), -normal_nll_by_hand(x, mu, sigma))


def test_gaussian_sigma_never_falls_below_min_sigma():
    lik = GaussianLikelihood(D, sigma="predicted", min_sigma=0.01)
    params = torch.cat([torch.zeros(1, D), torch.full((1, D), -200.0)], -1)
    torch.testing.assert_close(lik(params).base_dist.scale, torch.full((1, D), 0.01))


@pytest.mark.parametrize("mode", ["learned_shared", "learned_per_dim"])
def test_learned_sigma_is_a_saved_parameter_and_matches_closed_form(mode):
    lik = GaussianLikelihood(D, sigma=mode, min_sigma=1e-3)
    with torch.no_grad():
        lik.log_scale.copy_(torch.linspace(-1, 1, D) if mode == "learned_per_dim" else torch.tensor(-0.7))
    assert "log_scale" in lik.state_dict()
    assert any(p is lik.log_scale for p in lik.parameters())
    params, x = torch.randn(4, D, generator=gen()), torch.randn(4, D, generator=gen(1))
    sigma = 1e-3 + torch.exp(lik.log_scale.detach()).expand(D)
    torch.testing.assert_close(lik(params).log_prob(x), -normal_nll_by_hand(x, params, sigma))


@pytest.mark.parametrize("mode", ["learned_shared", "learned_per_dim"])
def test_learned_sigma_converges_to_the_residual_spread(mode):
    torch.manual_seed(0)
    n = 4000
    true_sigma = torch.tensor([0.05, 0.1, 0.2, 0.4, 0.8, 1.6])
    mu = torch.randn(n, D)
    x = mu + true_sigma * torch.randn(n, D)
    lik = GaussianLikelihood(D, sigma=mode, min_sigma=1e-3)
    opt = torch.optim.Adam(lik.parameters(), lr=0.05)
    for _ in range(400):
        opt.zero_grad()
        (-lik(mu).log_prob(x).mean()).backward()
        opt.step()
    residual = x - mu
    # maximum-likelihood scale: root mean square residual (per dimension, or over all of them)
    expected = residual.pow(2).mean(0).sqrt() if mode == "learned_per_dim" else residual.pow(2).mean().sqrt()
    learned = lik(mu[:1]).base_dist.scale[0]
    torch.testing.assert_close(learned, expected.expand(D), rtol=1e-3, atol=1e-4)


def test_laplace_matches_hand_written_density_and_l1():
    b = 0.25
    params, x = torch.randn(4, D, generator=gen()).double(), torch.randn(4, D, generator=gen(1)).double()
    lik = LaplaceLikelihood(D, sigma=str(b))
    expected = ((x - params).abs() / b + math.log(2 * b)).sum(-1)
    torch.testing.assert_close(-lik(params).log_prob(x), expected)
    # b = 1: L1 summed over dimensions plus D log 2
    l1 = F.l1_loss(params, x, reduction="none").sum(-1)
    torch.testing.assert_close(-LaplaceLikelihood(D, sigma="1")(params).log_prob(x), l1 + D * math.log(2))


def test_laplace_with_predicted_scale_uses_log_scale_block():
    lik = LaplaceLikelihood(D, sigma="predicted", min_sigma=1e-3)
    params, x = torch.randn(2, 2 * D, generator=gen()).double(), torch.randn(2, D, generator=gen(1)).double()
    scale = 1e-3 + torch.exp(params[:, D:])
    expected = ((x - params[:, :D]).abs() / scale + torch.log(2 * scale)).sum(-1)
    torch.testing.assert_close(-lik(params).log_prob(x), expected)


@pytest.mark.parametrize("lam", [0.01, 0.3, 0.5, 0.5001, 0.9])
def test_continuous_bernoulli_density_integrates_to_one_and_mean_is_its_first_moment(lam):
    lik = ContinuousBernoulliLikelihood(1)
    params = torch.tensor([[math.log(lam) - math.log1p(-lam)]], dtype=torch.float64)
    dist = lik(params)

    def density(v):
        return float(torch.exp(dist.log_prob(torch.tensor([[v]], dtype=torch.float64))))

    total, _ = integrate.quad(density, 0.0, 1.0, epsabs=1e-11)
    first, _ = integrate.quad(lambda v: v * density(v), 0.0, 1.0, epsabs=1e-11)
    assert total == pytest.approx(1.0, abs=1e-6)
    assert float(lik.mean(params)) == pytest.approx(first, abs=1e-6)
    if lam != 0.5:  # the mean is not lambda: it is pulled towards 1/2
        assert abs(first - lam) > 1e-6 or abs(lam - 0.5) < 1e-3


def test_continuous_bernoulli_differs_from_bce_by_its_log_normaliser():
    logits = torch.randn(3, D, generator=gen()).double()
    x = torch.rand(3, D, generator=gen(1)).double()
    lam = torch.sigmoid(logits)
    log_norm = torch.log(2 * torch.atanh(1 - 2 * lam) / (1 - 2 * lam))  # C(lambda), lambda != 1/2
    bce = F.binary_cross_entropy_with_logits(logits, x, reduction="none").sum(-1)
    torch.testing.assert_close(ContinuousBernoulliLikelihood(D)(logits).log_prob(x), -bce + log_norm.sum(-1))


def test_categorical_matches_log_softmax_with_level_major_layout():
    levels = 256
    lik = CategoricalLikelihood(D, levels)
    params = torch.randn(2, levels * D, generator=gen())
    x = torch.randint(0, levels, (2, D), generator=gen(1)).float()
    by_hand = torch.zeros(2)
    for i in range(2):
        for d in range(D):
            logits_d = params[i, d::D]  # level k of dimension d sits at k * D + d
            by_hand[i] += torch.log_softmax(logits_d, 0)[int(x[i, d])]
    torch.testing.assert_close(lik(params).log_prob(x), by_hand)
    uniform = lik(torch.zeros(1, levels * D)).log_prob(x[:1])
    assert float(-uniform / (D * math.log(2))) == pytest.approx(8.0)  # 8 bits/dim for a uniform model


@pytest.mark.parametrize("lik", [BernoulliLikelihood(D), ContinuousBernoulliLikelihood(D),
                                 GaussianLikelihood(D, "0.1", mean_link="sigmoid"),
                                 GaussianLikelihood(D, "predicted", mean_link="identity"),
                                 LaplaceLikelihood(D, "learned_shared"), CategoricalLikelihood(D, 256)],
                         ids=lambda lik: type(lik).__name__)
def test_init_output_bias_makes_the_starting_mean_the_data_mean(lik):
    data_mean = torch.tensor([0.05, 0.2, 0.4, 0.5, 0.7, 0.9], dtype=torch.float64)
    if isinstance(lik, CategoricalLikelihood):
        data_mean = data_mean * 255
    bias = torch.zeros(lik.params_per_dim * D, dtype=torch.float64)
    lik.init_output_bias(bias, data_mean)
    torch.testing.assert_close(lik.mean(bias), data_mean, rtol=1e-3, atol=1e-3)


def bad(x, i, j, value):
    x = x.clone()
    x[i, j] = value
    return x


@pytest.mark.parametrize("lik, x, message", [
    (BernoulliLikelihood(D), bad(torch.zeros(4, D), 2, 3, 0.5), "binary values 0/1.*example 2, dimension 3.*Binarize"),
    (BernoulliLikelihood(D), bad(torch.zeros(4, D), 1, 4, 2.0), "example 1, dimension 4 is 2"),
    (ContinuousBernoulliLikelihood(D), bad(torch.rand(4, D), 3, 0, 1.5), "in \\[0, 1\\].*example 3, dimension 0.*Scale"),
    (ContinuousBernoulliLikelihood(D), bad(torch.rand(4, D), 0, 5, -0.1), "example 0, dimension 5"),
    (CategoricalLikelihood(D), bad(torch.zeros(4, D), 2, 1, 3.5), "integer levels 0..255.*example 2, dimension 1"),
    (CategoricalLikelihood(D), bad(torch.zeros(4, D), 2, 1, 256.0), "example 2, dimension 1 is 256"),
    (GaussianLikelihood(D), bad(torch.zeros(4, D), 1, 2, float("nan")), "example 1, dimension 2 is nan.*impute"),
    (LaplaceLikelihood(D), bad(torch.zeros(4, D), 3, 3, float("inf")), "example 3, dimension 3 is inf"),
    (BernoulliLikelihood(D), bad(torch.zeros(4, D), 0, 0, float("nan")), "example 0, dimension 0 is nan"),
], ids=lambda v: type(v).__name__ if not isinstance(v, (torch.Tensor, str)) else None)
def test_bad_data_get_an_error_naming_example_dimension_and_fix(lik, x, message):
    with pytest.raises(DataMismatchError, match=message):
        lik.check_data(x, where="train split")


@pytest.mark.parametrize("lik, x", [
    (BernoulliLikelihood(D), torch.bernoulli(torch.full((3, D), 0.5))),
    (ContinuousBernoulliLikelihood(D), torch.rand(3, D)),
    (CategoricalLikelihood(D), torch.randint(0, 256, (3, D)).float()),
    (GaussianLikelihood(D), torch.randn(3, D) * 100),
])
def test_good_data_pass_the_check(lik, x):
    lik.check_data(x)


@pytest.mark.parametrize("sigma", ["0", "-1", "abc", "inf", "learned"])
def test_bad_sigma_setting_is_refused_with_the_allowed_values(sigma):
    info = DataInfo(name="t", shape=(D,), num_dims=D, support="real", binarization="none")
    with pytest.raises(ValueError, match="learned_shared, learned_per_dim, predicted"):
        build_likelihood(ModelConfig(likelihood="gaussian", sigma=sigma), info)


def test_from_config_uses_sigmoid_mean_for_unit_interval_data_and_identity_for_real_data():
    cfg = ModelConfig(likelihood="gaussian", sigma="predicted", min_sigma=0.02)
    unit = build_likelihood(cfg, DataInfo(name="t", shape=(D,), num_dims=D, support="unit_interval", binarization="none"))
    real = build_likelihood(cfg, DataInfo(name="t", shape=(D,), num_dims=D, support="real", binarization="none"))
    assert (unit.mean_link, real.mean_link, unit.min_scale, unit.params_per_dim) == ("sigmoid", "identity", 0.02, 2)
    cat = build_likelihood(ModelConfig(likelihood="categorical"),
                           DataInfo(name="t", shape=(D,), num_dims=D, support="8bit", binarization="none", levels=256))
    assert cat.params_per_dim == 256 and cat.wants_integer_levels and cat.discrete


def test_likelihood_samples_have_the_data_shape_and_support():
    torch.manual_seed(0)
    assert np.isin(BernoulliLikelihood(D)(torch.zeros(5, D)).sample().numpy(), [0, 1]).all()
    cb = ContinuousBernoulliLikelihood(D)(torch.randn(5, D)).sample()
    assert cb.shape == (5, D) and ((cb >= 0) & (cb <= 1)).all()
    cat = CategoricalLikelihood(D)(torch.randn(5, 256 * D)).sample()
    assert cat.shape == (5, D) and (cat == cat.round()).all() and cat.max() <= 255
