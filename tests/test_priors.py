"""Learned priors (mixture of Gaussians, VampPrior) against independent computations."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.special import logsumexp
from scipy.stats import norm

from aevb.config import ConfigError, ModelConfig, RunConfig, validate
from aevb.data import DataInfo
from aevb.models.mixtures import DiagonalGaussianMixture, mixture_of, sample_with_generator
from aevb.models.priors import MixtureOfGaussiansPrior
from aevb.models.vae import build_model

INFO = DataInfo(name="t", shape=(6,), num_dims=6, support="binary", binarization="none")


def random_mixture(num_components=4, latent_dim=3, seed=0) -> MixtureOfGaussiansPrior:
    torch.manual_seed(seed)
    prior = MixtureOfGaussiansPrior(latent_dim, num_components)
    with torch.no_grad():
        prior.logits.normal_()
        prior.log_scale.uniform_(-1.0, 0.5)
        prior.loc.mul_(2)
    return prior


def vamp_model(num_components=5, latent_dim=3, seed=0):
    torch.manual_seed(seed)
    cfg = ModelConfig(prior="vamp", prior_components=num_components, latent_dim=latent_dim, hidden=[8])
    x_train = torch.bernoulli(torch.full((20, INFO.num_dims), 0.3))
    return build_model(cfg, INFO, train_mean=x_train.mean(0), train_data=x_train), x_train


def test_mixture_log_prob_equals_a_hand_written_log_sum_exp_over_components():
    prior = random_mixture()
    p_z = prior()
    z = torch.randn(7, 5, 3) * 3
    pi = torch.softmax(prior.logits, 0).detach().double().numpy()
    loc, scale = prior.loc.detach().double().numpy(), prior.log_scale.exp().detach().double().numpy()
    zz = z.double().numpy()[..., None, :]  # (7, 5, 1, D)
    per_component = norm.logpdf(zz, loc, scale).sum(-1) + np.log(pi)  # (7, 5, K)
    expected = logsumexp(per_component, axis=-1)
    np.testing.assert_allclose(p_z.log_prob(z).detach().double().numpy(), expected, rtol=1e-5, atol=1e-5)
    # and the same as torch's own MixtureSameFamily.log_prob (its (..., K, D) broadcast)
    generic = torch.distributions.MixtureSameFamily.log_prob(p_z, z)
    torch.testing.assert_close(p_z.log_prob(z), generic, rtol=1e-5, atol=1e-5)


def test_mixture_log_prob_is_exact_for_narrow_components_far_from_the_origin():
    """The quadratic expansion in float64 loses ~1e-16 of (|z| / scale)^2: 1e-7 nats here."""
    p_z = DiagonalGaussianMixture(torch.zeros(2), torch.tensor([[30.0, -2.0], [0.0, 0.0]]),
                                  torch.tensor([[1e-3, 1.0], [50.0, 2.0]]))
    z = torch.tensor([[30.0, -2.0], [30.001, -2.0], [0.0, 0.0], [-30.0, 10.0]])
    expected = logsumexp(norm.logpdf(z.double().numpy()[:, None, :], p_z.loc.double().numpy(),
                                     p_z.scale.double().numpy()).sum(-1) + np.log(0.5), axis=-1)
    np.testing.assert_allclose(p_z.log_prob(z).double().numpy(), expected, rtol=1e-6)


def test_vamp_log_prob_is_the_mean_over_pseudo_inputs_of_q():
    model, _ = vamp_model()
    prior = model.prior_module
    z = torch.randn(4, 6, 3)
    per_k = torch.stack([model.encoder(prior.pseudo_inputs[k:k + 1]).log_prob(z) for k in range(prior.num_components)])
    expected = torch.logsumexp(per_k.double(), 0) - math.log(prior.num_components)  # log (1/K) sum_k q(z|u_k)
    torch.testing.assert_close(model.prior().log_prob(z).double(), expected, rtol=1e-5, atol=1e-5)


def test_vamp_needs_the_encoder_and_holds_no_encoder_weights():
    model, _ = vamp_model()
    with pytest.raises(ValueError, match="needs the encoder"):
        model.prior_module()
    prior_names = [n for n, _ in model.prior_module.named_parameters()]
    assert prior_names == ["pseudo_inputs"]
    storages = [t.untyped_storage().data_ptr() for t in model.state_dict().values()]
    assert len(storages) == len(set(storages))  # every tensor once: safetensors can save it


def test_vamp_pseudo_inputs_start_as_training_examples_or_near_the_mean():
    model, x_train = vamp_model(num_components=5)
    u = model.prior_module.pseudo_inputs.detach()
    assert all(any(torch.equal(row, x) for x in x_train) for row in u)
    torch.manual_seed(0)
    cfg = ModelConfig(prior="vamp", prior_components=400, latent_dim=3, hidden=[8], prior_init="random")
    model = build_model(cfg, INFO, train_data=x_train)
    u = model.prior_module.pseudo_inputs.detach()
    torch.testing.assert_close(u.mean(0), x_train.mean(0), atol=4 * 0.01 / math.sqrt(400), rtol=0)
    torch.testing.assert_close(u.std(0), torch.full((6,), 0.01), atol=0.002, rtol=0)


def moments_match(z: torch.Tensor, mean: torch.Tensor, var: torch.Tensor, num_se: float = 4.0) -> None:
    """Sample mean and variance of z (n, D) equal ``mean``/``var`` within num_se standard errors."""
    z = z.double()
    n = len(z)
    se_mean = (var / n).sqrt()
    centred = z - z.mean(0)
    fourth = centred.pow(4).mean(0)
    se_var = ((fourth - centred.pow(2).mean(0) ** 2) / n).sqrt()
    assert ((z.mean(0) - mean).abs() < num_se * se_mean).all(), (z.mean(0), mean, se_mean)
    assert ((z.var(0) - var).abs() < num_se * se_var).all(), (z.var(0), var, se_var)


def test_mixture_samples_match_the_first_two_moments_within_standard_errors():
    p_z = random_mixture()()
    z = sample_with_generator(p_z, 40000, torch.Generator().manual_seed(1))
    pi = p_z.mixture_distribution.probs.detach().double()[:, None]
    loc, scale = p_z.loc.detach().double(), p_z.scale.detach().double()
    mean = (pi * loc).sum(0)
    var = (pi * (scale**2 + loc**2)).sum(0) - mean**2  # law of total variance
    moments_match(z.detach(), mean, var)


def test_vamp_samples_match_the_first_two_moments_within_standard_errors():
    model, _ = vamp_model()
    with torch.no_grad():
        q_u = model.encoder(model.prior_module.pseudo_inputs)
        loc, scale = q_u.mean.double(), q_u.stddev.double()
        z = sample_with_generator(model.prior(), 40000, torch.Generator().manual_seed(2))
    mean = loc.mean(0)
    var = (scale**2 + loc**2).mean(0) - mean**2
    moments_match(z, mean, var)


def test_sampling_is_exact_ancestral_and_depends_only_on_the_generator():
    p_z = random_mixture()()
    torch.manual_seed(0)
    a = sample_with_generator(p_z, 5, torch.Generator().manual_seed(3))
    torch.manual_seed(99)
    b = sample_with_generator(p_z, 5, torch.Generator().manual_seed(3))
    torch.testing.assert_close(a, b)
    g = torch.Generator().manual_seed(3)  # component, then loc_k + scale_k * eps, from one generator
    k = torch.multinomial(p_z.mixture_distribution.probs, 5, replacement=True, generator=g)
    eps = torch.randn(5, 3, generator=g)
    torch.testing.assert_close(a, p_z.loc[k] + p_z.scale[k] * eps)


def test_a_non_gaussian_mixture_samples_through_the_generator_without_touching_the_global_rng():
    components = torch.distributions.Independent(torch.distributions.Laplace(torch.zeros(2, 3), torch.ones(2, 3)), 1)
    p_z = mixture_of(torch.zeros(2), components)
    assert not isinstance(p_z, DiagonalGaussianMixture)
    state = torch.get_rng_state()
    a = sample_with_generator(p_z, 4, torch.Generator().manual_seed(5))
    assert torch.equal(torch.get_rng_state(), state)
    torch.testing.assert_close(a, sample_with_generator(p_z, 4, torch.Generator().manual_seed(5)))


def test_learned_priors_with_the_analytic_kl_are_refused_up_front_naming_the_mc_kl():
    for prior in ("mog", "vamp"):
        cfg = RunConfig()
        cfg.model.prior = prior
        with pytest.raises(ConfigError, match=rf"objective.kl = 'analytic': the {prior} prior has no closed-form "
                                              r"KL.*use objective.kl = mc"):
            validate(cfg)
        cfg.objective.kl = "mc"
        validate(cfg)
        cfg.objective.kl, cfg.objective.name = "analytic", "iwae"  # the IWAE bound takes no KL
        validate(cfg)


@pytest.mark.parametrize("prior", ["mog", "vamp"])
def test_checkpoint_round_trip_of_each_prior_gives_equal_numbers(tmp_path, prior):
    from safetensors.torch import load_file, save_file

    torch.manual_seed(0)
    cfg = ModelConfig(prior=prior, prior_components=4, latent_dim=3, hidden=[8])
    x = torch.bernoulli(torch.full((10, INFO.num_dims), 0.4))
    model = build_model(cfg, INFO, train_data=x)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    save_file(model.state_dict(), str(tmp_path / "w.safetensors"))  # refuses shared tensors
    torch.manual_seed(1)
    clone = build_model(cfg, INFO)
    clone.load_state_dict(load_file(str(tmp_path / "w.safetensors")))
    z = torch.randn(5, 10, 3)
    torch.testing.assert_close(clone.prior().log_prob(z), model.prior().log_prob(z), rtol=0, atol=0)
    torch.manual_seed(2)
    a = model.log_weights(x, 3)
    torch.manual_seed(2)
    torch.testing.assert_close(clone.log_weights(x, 3), a, rtol=0, atol=0)
    g = lambda: torch.Generator().manual_seed(4)  # noqa: E731
    torch.testing.assert_close(clone.sample(6, g()), model.sample(6, g()), rtol=0, atol=0)


PRIOR_ARGS = ["--data", "digits", "--hidden", "32", "--latent-dim", "4", "--batch-size", "50", "--lr", "3e-3",
              "--quiet", "--kl", "mc", "--set", "model.prior_components=6"]


@pytest.mark.slow
@pytest.mark.parametrize("prior", ["mog", "vamp"])
def test_learned_priors_train_resume_exactly_evaluate_sample_and_plot_from_the_cli(tmp_path, prior, capsys):
    from aevb.cli import main
    from aevb.training.checkpoint import find_checkpoint, read_tensors

    args = [*PRIOR_ARGS, "--set", f"model.prior={prior}"]
    whole, resumed = tmp_path / "whole", tmp_path / "resumed"
    assert main(["train", *args, "--epochs", "2", "--out", str(whole)]) == 0
    assert main(["train", *args, "--epochs", "1", "--out", str(resumed)]) == 0
    assert main(["train", "--resume", str(resumed), "--epochs", "2", "--quiet"]) == 0
    a, b = read_tensors(find_checkpoint(whole)), read_tensors(find_checkpoint(resumed))
    assert [k for k in a if ".prior_module." in k] and set(a) == set(b)
    for key in a:
        torch.testing.assert_close(b[key], a[key], rtol=1e-6, atol=1e-7, msg=key)
    assert main(["evaluate", str(whole), "--k", "20"]) == 0
    assert main(["sample", str(whole), "-n", "8", "--out", str(tmp_path / "s.png")]) == 0
    capsys.readouterr()
    assert main(["plot", str(whole), "--out", str(tmp_path / "plots")]) == 0
    assert (tmp_path / "plots" / "prior_components.png").is_file()
    assert not (tmp_path / "plots" / "manifold.png").exists()
    assert "skipped manifold: the" in capsys.readouterr().out


@pytest.mark.parametrize("prior", ["mog", "vamp"])
def test_the_python_api_fits_a_learned_prior_samples_exactly_and_round_trips(tmp_path, prior):
    from sklearn.datasets import load_digits

    from aevb import AEVB

    x = load_digits().images[:300]
    vae = AEVB(latent_dim=3, hidden=(16,), epochs=2, prior=prior, prior_components=5, k=10).fit(x)
    assert vae.config_.objective.kl == "mc" and vae.config_.model.prior == prior
    a = vae.sample(4, random_state=3)
    torch.manual_seed(123)  # the global generator does not enter the draws
    np.testing.assert_array_equal(vae.sample(4, random_state=3), a)
    scores = vae.score_samples(x[:20])
    assert np.isfinite(scores).all()
    loaded = AEVB.load(vae.save(tmp_path / "m"))
    np.testing.assert_array_equal(loaded.sample(4, random_state=3), a)


def test_hierarchical_vamp_prior_on_the_top_layer_is_the_mean_of_q_z2_along_the_pseudo_inputs_means():
    torch.manual_seed(0)
    cfg = ModelConfig(prior="vamp", prior_components=4, latent_dims=[5, 3], latent_dim=5, hidden=[8],
                      stochastic_hidden=[6])
    x = torch.bernoulli(torch.full((12, INFO.num_dims), 0.3))
    model = build_model(cfg, INFO, train_data=x)
    p_z = model.prior()
    assert p_z.event_shape == (3,)  # p(z_2), the top layer
    u = model.prior_module.pseudo_inputs
    z2 = torch.randn(7, 3)
    per_k = torch.stack([model.posterior_layers[0](model.encoder(u[k:k + 1]).mean).log_prob(z2) for k in range(4)])
    torch.testing.assert_close(p_z.log_prob(z2), torch.logsumexp(per_k, 0) - math.log(4), rtol=1e-5, atol=1e-5)
    from aevb.inference.objectives import OBJECTIVES

    bound = OBJECTIVES["iwae"](model, x, num_samples=3)
    assert torch.isfinite(bound.value).all()
    bound.value.mean().backward()
    assert model.prior_module.pseudo_inputs.grad.abs().sum() > 0
    assert model.sample(4, torch.Generator().manual_seed(0)).shape == (4, INFO.num_dims)
