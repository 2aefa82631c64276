"""Discretized logistic (mixture): the 256 bin masses sum to 1, match a direct CDF difference; layout, mean, samples."""

import numpy as np
import pytest
import torch
from scipy import stats

from aevb.config import ModelConfig
from aevb.data import DataInfo
from aevb.models.discretized_likelihoods import (
    DiscretizedLogistic,
    DiscretizedLogisticLikelihood,
    DiscretizedLogisticMixtureLikelihood,
)
from aevb.models.likelihoods import DataMismatchError, build_likelihood

LEVELS = torch.arange(256, dtype=torch.float64)


def direct_masses(loc, scale):
    """P(k) = F(c_k + h) - F(c_k - h) with the edge bins to -inf/+inf, from scipy's logistic CDF."""
    c = 2 * np.arange(256) / 255 - 1
    upper = np.where(np.arange(256) == 255, np.inf, c + 1 / 255)
    lower = np.where(np.arange(256) == 0, -np.inf, c - 1 / 255)
    return stats.logistic.cdf(upper, loc, scale) - stats.logistic.cdf(lower, loc, scale)


@pytest.mark.parametrize("loc, scale", [(0.1, 0.05), (-0.97, 0.01), (0.999, 0.3), (0.0, 2.0), (0.3, 1e-3),
                                        (1.4, 0.02), (-0.5, 0.0009)])
def test_discretized_logistic_masses_sum_to_one_and_match_a_direct_cdf_difference(loc, scale):
    dist = DiscretizedLogistic(torch.tensor(loc, dtype=torch.float64), torch.tensor(scale, dtype=torch.float64))
    log_p = dist.log_prob(LEVELS)
    assert abs(float(torch.exp(log_p).sum()) - 1) < 1e-5
    direct = direct_masses(loc, scale)
    big = direct > 1e-12  # where the direct difference is not lost to cancellation
    np.testing.assert_allclose(np.exp(log_p.numpy())[big], direct[big], rtol=1e-7, atol=1e-15)


def test_discretized_logistic_is_exact_far_in_the_tail_where_a_cdf_difference_underflows():
    dist = DiscretizedLogistic(torch.tensor(-0.9, dtype=torch.float64), torch.tensor(0.01, dtype=torch.float64))
    log_p = dist.log_prob(torch.tensor(200.0, dtype=torch.float64))  # c = 0.569: 147 scales above the mean
    # logistic tail: P(k) ~ e^(-a) (1 - e^(-2h/s)) for a = (c - h - m)/s >> 1
    a = (2 * 200 / 255 - 1 - 1 / 255 + 0.9) / 0.01
    expected = -a + np.log(-np.expm1(-2 / 255 / 0.01))
    assert abs(float(log_p) - expected) < 1e-6


def test_discretized_logistic_float32_masses_sum_to_one():
    g = torch.Generator().manual_seed(0)
    loc, scale = torch.rand(50, 1, generator=g) * 2.4 - 1.2, torch.exp(torch.rand(50, 1, generator=g) * 6 - 7)
    masses = torch.exp(DiscretizedLogistic(loc, scale).log_prob(LEVELS.float()))  # (50, 256)
    torch.testing.assert_close(masses.sum(-1), torch.ones(50), atol=1e-5, rtol=0)


def test_single_logistic_likelihood_layout_and_sum_over_dimensions():
    D = 5
    lik = DiscretizedLogisticLikelihood(D)
    assert lik.params_per_dim == 2
    params = torch.randn(3, 2 * D, generator=torch.Generator().manual_seed(1)).double() * 0.5
    x = torch.randint(0, 256, (3, D), generator=torch.Generator().manual_seed(2)).double()
    loc, scale = params[:, :D], torch.exp(params[:, D:])
    expected = np.zeros(3)
    for b in range(3):
        for d in range(D):
            expected[b] += np.log(direct_masses(float(loc[b, d]), float(scale[b, d]))[int(x[b, d])])
    np.testing.assert_allclose(lik(params).log_prob(x).numpy(), expected, rtol=1e-9)


def test_mixture_is_the_weighted_sum_of_component_masses_and_sums_to_one():
    D, K = 3, 4
    lik = DiscretizedLogisticMixtureLikelihood(D, num_components=K)
    assert lik.params_per_dim == 3 * K
    params = torch.randn(2, 3 * K * D, generator=torch.Generator().manual_seed(3)).double() * 0.7
    blocks = params.view(2, 3 * K, D)
    weights = torch.softmax(blocks[:, :K], 1).numpy()
    loc, scale = blocks[:, K:2 * K].numpy(), np.exp(blocks[:, 2 * K:].numpy())
    x = torch.tensor([[0.0, 128.0, 255.0], [17.0, 3.0, 240.0]], dtype=torch.float64)
    expected = np.zeros(2)
    for b in range(2):
        for d in range(D):
            mass = sum(weights[b, k, d] * direct_masses(loc[b, k, d], scale[b, k, d])[int(x[b, d])] for k in range(K))
            expected[b] += np.log(mass)
    dist = lik(params)
    np.testing.assert_allclose(dist.log_prob(x).numpy(), expected, rtol=1e-9)
    # per dimension, the 256 masses of the mixture sum to 1
    all_levels = LEVELS[:, None, None].expand(256, 2, D)
    per_dim = torch.exp(dist.base_dist.log_prob(all_levels)).sum(0)
    torch.testing.assert_close(per_dim, torch.ones(2, D, dtype=torch.float64), atol=1e-5, rtol=0)
    # the mean is sum_k k P(k)
    by_sum = (torch.exp(dist.base_dist.log_prob(all_levels)) * LEVELS[:, None, None]).sum(0)
    torch.testing.assert_close(dist.mean, by_sum, rtol=1e-9, atol=1e-7)


def test_samples_are_levels_with_the_stated_distribution():
    torch.manual_seed(0)
    dist = DiscretizedLogistic(torch.tensor(0.2, dtype=torch.float64), torch.tensor(0.03, dtype=torch.float64))
    draws = dist.sample((200000,))
    assert torch.equal(draws, draws.round()) and draws.min() >= 0 and draws.max() <= 255
    freq = torch.bincount(draws.long(), minlength=256).double() / len(draws)
    torch.testing.assert_close(freq, torch.exp(dist.log_prob(LEVELS)), atol=4e-3, rtol=0)


def test_initial_bias_puts_the_mean_at_the_data_mean_away_from_the_edge_bins():
    D = 4
    data_mean = torch.tensor([60.0, 100.0, 128.0, 180.0])  # symmetric logistics, tails far from 0 and 255
    for lik in (DiscretizedLogisticLikelihood(D), DiscretizedLogisticMixtureLikelihood(D, num_components=3)):
        bias = torch.zeros(lik.params_per_dim * D)
        lik.init_output_bias(bias, data_mean)
        mean = lik.mean(bias[None])[0]
        torch.testing.assert_close(mean, data_mean, atol=1.0, rtol=0)  # the edge bins' tails pull by < 1 level
        assert abs(float(mean[2]) - 128) < 0.01  # centred on level 128's bin: symmetric up to the far tails


@pytest.mark.parametrize("name", ["discretized_logistic", "discretized_logistic_mixture"])
def test_values_that_are_not_levels_are_refused(name):
    info = DataInfo(name="t", shape=(3,), num_dims=3, support="8bit", binarization="none", levels=256)
    lik = build_likelihood(ModelConfig(likelihood=name, num_mixtures=2), info)
    assert lik.params_per_dim == (2 if name == "discretized_logistic" else 6)
    with pytest.raises(DataMismatchError, match="example 1, dimension 2 is 0.5"):
        lik.check_data(torch.tensor([[0.0, 1.0, 2.0], [3.0, 4.0, 0.5]]))
