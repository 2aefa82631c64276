"""The AEVB estimator: fit / transform / score_samples / sample on NumPy arrays."""

import math

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits
from sklearn.exceptions import NotFittedError

from aevb import AEVB
from aevb.config import ConfigError


@pytest.fixture(scope="module")
def digits():
    return load_digits().images  # (1797, 8, 8), values 0..16


@pytest.fixture(scope="module")
def fitted(digits):
    return AEVB(latent_dim=2, hidden=(32,), epochs=3, lr=3e-3).fit(digits)


def test_fit_on_digits_gives_finite_scores_2d_codes_and_samples(fitted, digits):
    scores = fitted.score_samples(digits[:200])
    assert scores.shape == (200,) and np.isfinite(scores).all()
    assert (scores < 0).all()  # log-probabilities of binary images
    codes = fitted.transform(digits)
    assert codes.shape == (len(digits), 2) and np.isfinite(codes).all()
    samples = fitted.sample(5)
    assert samples.shape == (5, 8, 8)
    assert (samples >= 0).all() and (samples <= 16).all()  # E[x|z] in the units of X
    assert fitted.scaling_.mode == "max" and fitted.scaling_.scale[0] == 16.0 and fitted.info_.binarization == "dynamic"


def test_transform_is_the_posterior_mean_of_the_scaled_data(fitted, digits):
    x = torch.from_numpy(digits[:10].reshape(10, -1).astype(np.float32) / 16)
    mu = fitted.model_.encoder.net(x)[:, :2].detach().numpy()  # first half of the encoder output
    np.testing.assert_allclose(fitted.transform(digits[:10]), mu, rtol=1e-5, atol=1e-6)


def test_training_raises_the_bound(digits):
    vae = AEVB(latent_dim=2, hidden=(32,), epochs=6, lr=3e-3).fit(digits)
    assert vae.history_[-1] > vae.history_[0] + 0.5


def test_score_samples_approaches_log_px_from_quadrature():
    """latent_dim=1: log p(x) = log int p(x|z) N(z; 0, 1) dz by a dense grid, independent of the bound."""
    rng = np.random.default_rng(0)
    X = (rng.random((300, 12)) < np.linspace(0.1, 0.9, 12)).astype(np.float32)  # binary: no binarization
    vae = AEVB(latent_dim=1, hidden=(16,), epochs=3, lr=1e-2, k=2000).fit(X)
    assert vae.info_.binarization == "none"
    x = torch.from_numpy(X[:8])
    z = torch.linspace(-8, 8, 4001).unsqueeze(1)  # (G, 1)
    with torch.no_grad():
        logits = vae.model_.decoder(z).double()  # (G, 12)
    log_p_x_given_z = (x.double().unsqueeze(1) * torch.nn.functional.logsigmoid(logits)
                       + (1 - x.double().unsqueeze(1)) * torch.nn.functional.logsigmoid(-logits)).sum(-1)  # (8, G)
    log_p_z = -0.5 * z.double().squeeze(1) ** 2 - 0.5 * math.log(2 * math.pi)
    dz = float(z[1] - z[0])
    log_px = torch.logsumexp(log_p_x_given_z + log_p_z, dim=1) + math.log(dz)
    estimate = vae.score_samples(X[:8])
    np.testing.assert_allclose(estimate, log_px.numpy(), atol=0.05)
    assert (estimate <= log_px.numpy() + 0.02).all()  # a lower bound up to Monte Carlo noise


def test_bad_arguments_name_the_key_and_the_allowed_values(digits):
    with pytest.raises(ConfigError) as e:
        AEVB(activation="sigmoid", optimizer="sgd").fit(digits)
    assert "model.activation = 'sigmoid': allowed values are tanh" in str(e.value)
    assert "train.optimizer = 'sgd': allowed values are adam, adagrad" in str(e.value)


def test_bad_data_are_refused_clearly():
    with pytest.raises(ValueError, match="shape"):
        AEVB().fit(np.zeros(5))
    with pytest.raises(ValueError, match=r"X\[1, 2\] is nan"):
        X = np.zeros((3, 4))
        X[1, 2] = np.nan
        AEVB().fit(X)
    with pytest.raises(ValueError, match="bernoulli likelihood needs values in"):
        AEVB(latent_dim=1, scaling="none").fit(np.array([[-1.0, 0.5], [0.2, 0.3]]))


def test_unfitted_estimator_says_to_fit_first():
    with pytest.raises(NotFittedError, match="not fitted yet"):
        AEVB().transform(np.zeros((2, 3)))


def test_new_data_of_another_shape_is_refused(fitted):
    with pytest.raises(ValueError, match="X has 63 features, but AEVB is expecting 64 features"):
        fitted.transform(np.zeros((2, 7, 9)))
    assert fitted.transform(np.zeros((2, 64))).shape == (2, 2)  # flattened images are the same 64 features


def test_fit_leaves_the_global_torch_rng_alone(digits):
    torch.manual_seed(5)
    expected = torch.rand(3)
    torch.manual_seed(5)
    AEVB(hidden=(8,), epochs=1).fit(digits[:100])
    assert torch.equal(torch.rand(3), expected)


def test_parameters_follow_the_scikit_learn_protocol():
    from sklearn.base import clone

    vae = AEVB(latent_dim=3, hidden=(7, 5), k=11)
    copy = clone(vae)
    assert copy is not vae and copy.get_params() == vae.get_params()
    assert copy.set_params(epochs=2).epochs == 2
    with pytest.raises(ValueError, match="Invalid parameter 'epoch' for estimator AEVB.*Valid parameters are"):
        vae.set_params(epoch=2)
