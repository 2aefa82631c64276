"""Poisson, NB and ZINB log p(x|z) against scipy.stats on random parameters; layout, library size, errors."""

import math

import numpy as np
import pytest
import torch
from scipy import stats

from aevb.config import ModelConfig
from aevb.data import DataInfo
from aevb.models.count_likelihoods import (
    NegativeBinomialLikelihood,
    PoissonLikelihood,
    ZeroInflatedNegativeBinomialLikelihood,
)
from aevb.models.likelihoods import DataMismatchError, build_likelihood

D = 7


def random_counts(shape, seed=1):
    g = torch.Generator().manual_seed(seed)
    x = torch.poisson(torch.rand(*shape, generator=g) * 6, generator=g)
    x[0, :3] = 0  # make sure zeros (the zero-inflated branch) are present
    return x.double()


def test_poisson_log_p_is_scipy_poisson_logpmf_summed():
    eta = torch.randn(4, D, generator=torch.Generator().manual_seed(0)).double()
    x = random_counts((4, D))
    log_p = PoissonLikelihood(D)(eta).log_prob(x)
    expected = stats.poisson.logpmf(x.numpy(), np.exp(eta.numpy())).sum(-1)
    np.testing.assert_allclose(log_p.numpy(), expected, rtol=1e-10)


def test_nb_log_p_is_scipy_nbinom_logpmf_with_per_example_dispersion():
    lik = NegativeBinomialLikelihood(D, dispersion="per_example")
    assert lik.params_per_dim == 2
    params = torch.randn(4, 2 * D, generator=torch.Generator().manual_seed(0)).double() * 1.5
    x = random_counts((4, D))
    mu, theta = np.exp(params[:, :D].numpy()), np.exp(params[:, D:].numpy())
    # scipy: nbinom(n, p) has mean n (1 - p) / p; n = theta, p = theta / (theta + mu) gives mean mu
    expected = stats.nbinom.logpmf(x.numpy(), theta, theta / (theta + mu)).sum(-1)
    np.testing.assert_allclose(lik(params).log_prob(x).numpy(), expected, rtol=1e-9)
    np.testing.assert_allclose(lik(params).mean.numpy(), mu, rtol=1e-12)


@pytest.mark.parametrize("dispersion", ["per_feature", "shared", "2.5"])
def test_nb_dispersion_modes_use_the_stated_theta(dispersion):
    lik = NegativeBinomialLikelihood(D, dispersion=dispersion).double()
    assert lik.params_per_dim == 1
    if dispersion != "2.5":
        with torch.no_grad():
            lik.log_theta.copy_(torch.linspace(-1, 1, D) if dispersion == "per_feature" else torch.tensor(0.7))
    theta = (np.full(D, 2.5) if dispersion == "2.5" else np.exp(lik.log_theta.detach().numpy()) * np.ones(D))
    eta = torch.randn(3, D, generator=torch.Generator().manual_seed(2)).double()
    x = random_counts((3, D))
    mu = np.exp(eta.numpy())
    expected = stats.nbinom.logpmf(x.numpy(), theta, theta / (theta + mu)).sum(-1)
    np.testing.assert_allclose(lik(eta).log_prob(x).detach().numpy(), expected, rtol=1e-9)


def test_zinb_log_p_is_the_explicit_mixture_of_a_point_mass_and_scipy_nbinom():
    lik = ZeroInflatedNegativeBinomialLikelihood(D, dispersion="per_example")
    assert lik.blocks == ["eta", "log_theta", "dropout"]
    params = torch.randn(5, 3 * D, generator=torch.Generator().manual_seed(3)).double() * 1.5
    x = random_counts((5, D))
    mu, theta = np.exp(params[:, :D].numpy()), np.exp(params[:, D:2 * D].numpy())
    pi = 1 / (1 + np.exp(-params[:, 2 * D:].numpy()))
    nb = stats.nbinom.pmf(x.numpy(), theta, theta / (theta + mu))
    expected = np.log(pi * (x.numpy() == 0) + (1 - pi) * nb).sum(-1)
    dist = lik(params)
    np.testing.assert_allclose(dist.log_prob(x).numpy(), expected, rtol=1e-9)
    np.testing.assert_allclose(dist.mean.numpy(), (1 - pi) * mu, rtol=1e-12)


def test_zinb_pmf_sums_to_one_over_the_counts():
    lik = ZeroInflatedNegativeBinomialLikelihood(1, dispersion="per_example")
    params = torch.tensor([[1.2, -0.3, 0.4]], dtype=torch.float64)
    k = torch.arange(0, 2000, dtype=torch.float64)[:, None]
    total = torch.exp(lik(params).log_prob(k)).sum()
    assert abs(float(total) - 1) < 1e-10


def test_observed_library_size_gives_mean_l_times_softmax_and_scipy_poisson():
    lik = PoissonLikelihood(D, library_size="observed")
    eta = torch.randn(4, D, generator=torch.Generator().manual_seed(4)).double()
    x = random_counts((4, D))
    library = x.sum(-1, keepdim=True).numpy()
    mu = library * torch.softmax(eta, -1).numpy()
    expected = stats.poisson.logpmf(x.numpy(), mu).sum(-1)
    np.testing.assert_allclose(lik(eta).log_prob(x).numpy(), expected, rtol=1e-10)
    lik.init_output_bias(torch.zeros(D), x.float().mean(0))  # sets the default library size
    np.testing.assert_allclose(float(lik.library_size), float(x.sum(-1).mean()), rtol=1e-6)
    np.testing.assert_allclose(lik.mean(eta.float()).sum(-1).numpy(), float(lik.library_size), rtol=1e-5)


@pytest.mark.parametrize("cls", [PoissonLikelihood, NegativeBinomialLikelihood, ZeroInflatedNegativeBinomialLikelihood])
def test_initial_bias_makes_the_mean_the_data_mean(cls):
    lik = cls(D)
    data_mean = torch.linspace(0.5, 9, D)
    bias = torch.zeros(lik.params_per_dim * D)
    lik.init_output_bias(bias, data_mean)
    torch.testing.assert_close(lik.mean(bias), data_mean, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", ["poisson", "nb", "zinb"])
def test_non_counts_are_refused_naming_example_column_and_value(name):
    info = DataInfo(name="t", shape=(D,), num_dims=D, support="counts", binarization="none")
    lik = build_likelihood(ModelConfig(likelihood=name), info)
    x = torch.zeros(3, D)
    x[2, 4] = 1.5
    with pytest.raises(DataMismatchError, match=f"{name} likelihood needs non-negative integer counts.*example 2, column 4 is 1.5"):
        lik.check_data(x)
    x[2, 4] = -3
    with pytest.raises(DataMismatchError, match="example 2, column 4 is -3"):
        lik.check_data(x)


def test_samples_are_counts_with_the_stated_mean():
    lik = ZeroInflatedNegativeBinomialLikelihood(2, dispersion="per_example")
    params = torch.tensor([[math.log(4.0), math.log(0.5), 0.0, math.log(2.0), 1.0, -1.0]]).double()
    torch.manual_seed(0)
    draws = lik(params).sample((40000,))
    assert torch.equal(draws, draws.round()) and (draws >= 0).all()
    torch.testing.assert_close(draws.mean(0), lik(params).mean, rtol=0.03, atol=0.03)
