"""Likelihood starting points that train: the categorical histogram, learned scales from a PCA residual,
and the size warning for huge configurations."""

import math
import warnings

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits

from aevb import AEVB
from aevb.config import ModelConfig
from aevb.data import DataInfo
from aevb.models.likelihoods import CategoricalLikelihood, residual_std
from aevb.models.vae import build_model


def _linear_gaussian_data(noise_std: np.ndarray, n: int = 4000, latent_dim: int = 2, seed: int = 0) -> np.ndarray:
    """x = W z + b + noise, noise_d ~ N(0, noise_std_d^2): the noise is the true residual scale."""
    rng = np.random.default_rng(seed)
    w = rng.normal(size=(latent_dim, len(noise_std)))
    z = rng.normal(size=(n, latent_dim))
    return (z @ w + rng.normal(size=(n, len(noise_std))) * noise_std).astype(np.float32)


def test_categorical_bias_is_the_smoothed_histogram_of_each_dimension():
    rng = np.random.default_rng(0)
    x = rng.integers(0, 4, size=(50, 3)).astype(np.float32)
    like = CategoricalLikelihood(3, num_levels=4)
    bias = torch.zeros(4 * 3)
    like.init_from_data(bias, torch.from_numpy(x), latent_dim=1)
    w = max(4 / (50 + 4), 0.01)
    for d in range(3):
        counts = np.bincount(x[:, d].astype(int), minlength=4)
        expected = np.log((1 - w) * counts / 50 + w / 4)
        np.testing.assert_allclose(bias.view(4, 3)[:, d].numpy(), expected, rtol=1e-6)  # level-major layout


def test_categorical_first_epoch_elbo_beats_the_uniform_model():
    """On uint8 images the mean training ELBO of the first epoch is above log(1/256) per pixel (uniform):
    the former Binomial-matched start sat far below it (-2,953 against -355 nats here)."""
    X = (load_digits().images * 15).astype(np.uint8)  # (1797, 8, 8), 0..240
    vae = AEVB(likelihood="categorical", latent_dim=2, hidden=(32,), epochs=1, lr=1e-3).fit(X)
    uniform = -64 * math.log(256)
    assert vae.history_[0] > uniform + 50


def test_learned_shared_sigma_is_near_the_true_noise_after_one_epoch():
    X = _linear_gaussian_data(np.full(12, 0.1))
    vae = AEVB(likelihood="gaussian", sigma="learned_shared", scaling="none", latent_dim=2, hidden=(32,),
               epochs=1).fit(X)
    sigma = vae.model_.likelihood_module.scale_description["value"]
    assert 0.08 < sigma < 0.13  # started at 1.0 before (and moved about lr per step)


def test_learned_per_dim_sigma_follows_unequal_noise_and_differs_from_shared():
    noise = np.linspace(0.05, 0.4, 10)
    X = _linear_gaussian_data(noise)
    kw = dict(likelihood="gaussian", scaling="none", latent_dim=2, hidden=(32,), epochs=1)
    per_dim = AEVB(sigma="learned_per_dim", **kw).fit(X).model_.likelihood_module
    shared = AEVB(sigma="learned_shared", **kw).fit(X).model_.likelihood_module
    s = (per_dim.min_scale + per_dim.log_scale.exp()).detach().numpy()
    assert np.corrcoef(s, noise)[0, 1] > 0.95 and s[-1] > 3 * s[0]
    np.testing.assert_allclose(s, noise, atol=0.04)
    assert s.std() > 0.05 and shared.log_scale.numel() == 1


def test_residual_std_gives_the_probabilistic_pca_noise_variance():
    """mean_d r_d^2 = PPCA's ML sigma^2 = mean of the D - d smallest covariance eigenvalues (numpy's eigvalsh)."""
    noise = np.array([0.1, 0.2, 0.3, 0.1, 0.2, 0.3])
    x = _linear_gaussian_data(noise, n=5000)
    r = residual_std(torch.from_numpy(x), latent_dim=2).double().numpy()
    eigenvalues = np.linalg.eigvalsh(np.cov(x.astype(np.float64), rowvar=False))  # ascending
    np.testing.assert_allclose((r ** 2).mean(), eigenvalues[:4].mean(), rtol=1e-4)
    assert abs(np.sqrt((r ** 2).mean()) - np.sqrt((noise ** 2).mean())) < 0.02


def test_a_huge_configuration_warns_with_its_size_and_speed():
    info = DataInfo(name="t", shape=(784,), num_dims=784, support="8bit", binarization="none", levels=256)
    cfg = ModelConfig(likelihood="categorical", hidden=[500], latent_dim=2)
    with pytest.warns(UserWarning, match=r"large model: 10\d,\d{3},\d{3} parameters \(\d+ MB.*examples/s"):
        build_model(cfg, info, train_data=torch.zeros(2, 784))
    small = ModelConfig(likelihood="bernoulli", hidden=[500], latent_dim=2)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        build_model(small, DataInfo(name="t", shape=(784,), num_dims=784, support="binary", binarization="none"),
                    train_data=torch.zeros(2, 784))


def test_export_json_alone_defines_the_gaussian_p_x_given_z(tmp_path):
    """From export.json's description and the decoder's params, log p(x|z) = sum_d log N(x_d; sigmoid(p_d), s^2)."""
    import json

    from scipy.stats import norm

    from aevb.outputs.export import export_model

    X = np.clip(_linear_gaussian_data(np.full(6, 0.05), n=200) * 0.1 + 0.5, 0, 1)
    vae = AEVB(likelihood="gaussian", latent_dim=2, hidden=(8,), epochs=1, scaling="none").fit(X)
    manifest = export_model(vae.model_, vae.info_, tmp_path / "export", "torchscript")
    desc = json.loads((tmp_path / "export" / "export.json").read_text())["p_x_given_z"]
    assert desc == manifest["p_x_given_z"] and desc["mean"].startswith("sigmoid")
    z = torch.randn(3, 2)
    with torch.no_grad():
        params = vae.model_.decoder(z).double().numpy()
        expected = vae.model_.likelihood(z).log_prob(torch.from_numpy(X[:3])).numpy()
    mean = 1 / (1 + np.exp(-params))
    by_hand = norm.logpdf(X[:3].astype(np.float64), mean, desc["scale"]["values"]).sum(-1)
    np.testing.assert_allclose(by_hand, expected, rtol=1e-5)
