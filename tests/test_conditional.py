"""The conditional VAE: log p(x|y) against hand-written computations, samples per label, the CLI."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from aevb.config import ConfigError, ModelConfig, RunConfig, validate
from aevb.data import DataInfo
from aevb.inference.importance import draw_noise, importance_sample
from aevb.inference.objectives import elbo
from aevb.models.vae import build_model

C, DIMS = 3, 6
INFO = DataInfo(name="t", shape=(DIMS,), num_dims=DIMS, support="real", binarization="none")
CLASS_MEANS = torch.tensor([[2.0, 2.0, 0.0, 0.0, -2.0, -2.0],
                            [-2.0, 0.0, 2.0, -2.0, 0.0, 2.0],
                            [0.0, -2.0, -2.0, 2.0, 2.0, 0.0]])


def conditional_model(conditional_prior=False, seed=0, latent_dim=2):
    torch.manual_seed(seed)
    cfg = ModelConfig(conditional=True, num_classes=C, conditional_prior=conditional_prior, latent_dim=latent_dim,
                      hidden=[32], likelihood="gaussian", sigma="learned_shared")
    return build_model(cfg, INFO)


def class_data(n=600, seed=0):
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, C, (n,), generator=g)
    return CLASS_MEANS[y] + 0.3 * torch.randn(n, DIMS, generator=g), y


@pytest.mark.parametrize("conditional_prior", [False, True])
def test_log_weights_are_log_p_x_given_z_y_plus_log_p_z_given_y_minus_log_q(conditional_prior):
    model = conditional_model(conditional_prior)
    if conditional_prior:
        with torch.no_grad():
            model.prior_module.loc.normal_()
            model.prior_module.log_scale.uniform_(-0.5, 0.5)
    x, y = class_data(5)
    onehot = torch.nn.functional.one_hot(y, C).float()
    torch.manual_seed(1)
    log_w = model.given(y).log_weights(x, 4)  # (K, B)
    torch.manual_seed(1)
    q_z = model.encoder(torch.cat([x, onehot], -1))
    z = q_z.rsample((4,))
    params = model.decoder(torch.cat([z, onehot.expand(4, 5, C)], -1))
    if conditional_prior:  # N(z; mu_y, diag s_y^2), written out
        loc, log_s = model.prior_module.loc[y], model.prior_module.log_scale[y]
        log_p_z = (-0.5 * ((z - loc) / log_s.exp()) ** 2 - log_s - 0.5 * math.log(2 * math.pi)).sum(-1)
    else:
        log_p_z = (-0.5 * z**2 - 0.5 * math.log(2 * math.pi)).sum(-1)
    expected = model.likelihood_module(params).log_prob(x) + log_p_z - q_z.log_prob(z)
    torch.testing.assert_close(log_w, expected)


@pytest.mark.parametrize("conditional_prior", [False, True])
def test_the_evaluator_with_labels_equals_log_mean_exp_of_hand_computed_weights_on_its_noise(conditional_prior):
    model = conditional_model(conditional_prior, seed=2)
    x, y = class_data(7, seed=3)
    k = 30
    out = importance_sample(model, x, k=k, seed=5, labels=y, progress=False, max_examples=3, workers=1)
    eps = draw_noise(torch.Generator().manual_seed(6), len(x), k, 2, x)  # (B, K, D): the evaluator's noise
    labelled = model.given(y)
    with torch.no_grad():
        q_z = labelled.posterior(x)
        z = q_z.base_dist.loc + q_z.base_dist.scale * eps.transpose(0, 1)  # (K, B, D)
        log_w = labelled.likelihood(z).log_prob(x) + labelled.prior().log_prob(z) - q_z.log_prob(z)
    expected = torch.logsumexp(log_w.double(), 0) - math.log(k)
    torch.testing.assert_close(out["log_px"], expected, rtol=1e-5, atol=1e-4)
    with pytest.raises(ValueError, match="give one label per example"):
        importance_sample(model, x, k=2, progress=False)


def test_labels_outside_the_classes_are_refused_naming_the_example():
    model = conditional_model()
    with pytest.raises(ValueError, match=r"label 3 \(example 1\) is not a class of this model: labels are 0..2"):
        model.given(torch.tensor([0, 3]))
    with pytest.raises(ValueError, match="this model is conditional.*model.given"):
        model.log_weights(torch.zeros(2, DIMS), 1)


@pytest.mark.parametrize("conditional_prior", [False, True])
def test_samples_for_each_label_land_at_that_class_mean(conditional_prior):
    """Synthetic data whose class sets the mean: E over z ~ p(z|y) of E[x|z,y] is the class mean."""
    model = conditional_model(conditional_prior)
    x, y = class_data()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for step in range(400):
        i = torch.randint(0, len(x), (100,), generator=torch.Generator().manual_seed(step))
        opt.zero_grad()
        (-elbo(model.given(y[i]), x[i], num_samples=1, kl="analytic").value.mean()).backward()
        opt.step()
    for label in range(C):
        samples = model.sample(2000, torch.Generator().manual_seed(label), labels=torch.full((2000,), label))
        assert samples.shape == (2000, DIMS)
        torch.testing.assert_close(samples.mean(0), CLASS_MEANS[label], atol=0.25, rtol=0)


def test_conditional_configurations_that_cannot_work_are_refused_up_front():
    cfg = RunConfig()
    cfg.model.conditional, cfg.model.prior, cfg.objective.kl = True, "vamp", "mc"
    cfg.model.arch = "conv"
    with pytest.raises(ConfigError) as e:
        validate(cfg)
    assert "pseudo-inputs carry no labels" in str(e.value) and "allowed value is mlp" in str(e.value)
    cfg = RunConfig()
    cfg.model.conditional_prior = True
    with pytest.raises(ConfigError, match="model.conditional_prior = true needs model.conditional = true"):
        validate(cfg)
    cfg.model.conditional = True
    validate(cfg)  # the conditional Gaussian prior has a closed-form KL: analytic allowed


CLI_ARGS = ["--data", "digits", "--hidden", "32", "--latent-dim", "4", "--batch-size", "50", "--lr", "3e-3",
            "--quiet", "--set", "model.conditional=true"]


@pytest.mark.slow
def test_a_conditional_run_trains_resumes_evaluates_samples_scores_encodes_and_plots(tmp_path, capsys):
    from aevb.cli import main
    from aevb.training.checkpoint import find_checkpoint, read_tensors

    whole, resumed = tmp_path / "whole", tmp_path / "resumed"
    assert main(["train", *CLI_ARGS, "--epochs", "2", "--out", str(whole)]) == 0
    assert main(["train", *CLI_ARGS, "--epochs", "1", "--out", str(resumed)]) == 0
    assert main(["train", "--resume", str(resumed), "--epochs", "2", "--quiet"]) == 0
    a, b = read_tensors(find_checkpoint(whole)), read_tensors(find_checkpoint(resumed))
    for key in a:
        torch.testing.assert_close(b[key], a[key], rtol=1e-6, atol=1e-7, msg=key)
    capsys.readouterr()
    assert main(["evaluate", str(whole), "--k", "10", "--quiet"]) == 0
    assert "every number is of log p(x|y)" in capsys.readouterr().out
    assert main(["sample", str(whole), "-n", "4", "--label", "3", "--out", str(tmp_path / "s3.png")]) == 0
    assert main(["score", str(whole), "--k", "5", "--out", str(tmp_path / "s.csv"), "--quiet"]) == 0
    assert main(["encode", str(whole), "--out", str(tmp_path / "z.npz")]) == 0
    assert np.load(tmp_path / "z.npz")["mu"].shape == (180, 4)
    assert main(["plot", str(whole), "--out", str(tmp_path / "plots")]) == 0
    assert (tmp_path / "plots" / "samples_per_class.png").is_file()
    from aevb.outputs.report import gather_report

    report = gather_report(whole)
    assert any("log p(x|y)" in n for n in report.notes) and "samples_per_class" in dict(report.figures)
    assert main(["sample", str(whole), "-n", "4", "--label", "10", "--out", str(tmp_path / "x.png")]) == 2
    assert "label 10 (example 0) is not a class of this model: labels are 0..9" in capsys.readouterr().err


def test_labels_of_a_users_npz_condition_the_model_and_data_without_labels_are_refused(tmp_path, capsys):
    from aevb.cli import main

    g = np.random.default_rng(0)
    y = g.integers(0, 3, 300)
    x = (g.random((300, 12)) < np.where(y[:, None] == np.arange(3).repeat(4)[None], 0.9, 0.1)).astype(np.uint8)
    np.savez(tmp_path / "d.npz", x=x, y=y)
    args = ["--hidden", "16", "--latent-dim", "2", "--epochs", "1", "--quiet", "--set", "model.conditional=true"]
    assert main(["train", "--data", str(tmp_path / "d.npz"), *args, "--out", str(tmp_path / "run")]) == 0
    from aevb.config import RunConfig

    assert RunConfig.load(tmp_path / "run" / "config.json").model.num_classes == 3  # resolved from y
    np.savez(tmp_path / "nolabels.npz", x=x)
    capsys.readouterr()
    assert main(["train", "--data", str(tmp_path / "nolabels.npz"), *args, "--out", str(tmp_path / "r2")]) == 2
    assert "model.conditional = true needs labels, but the train split" in capsys.readouterr().err
