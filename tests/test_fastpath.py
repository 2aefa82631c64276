"""The hand-derived ELBO gradient (aevb.speed.fastpath) equals autograd through the shared objective."""

import pytest
import torch
from conftest import assert_fast_epoch_equals_autograd, autograd_reference, binary_draws

from aevb.config import ModelConfig, ObjectiveConfig, RunConfig, TrainConfig
from aevb.data import DataInfo
from aevb.models.vae import build_model
from aevb.speed.fastpath import FastElbo, fast_path_reason
from aevb.training.loop import build_bound_module
from aevb.training.optim import build_optimizer
from aevb.training.step import BoundModule

INFO = DataInfo(name="t", shape=(6, 5), num_dims=30, support="binary", binarization="dynamic")


def model_for(activation="tanh", hidden=(16,), dtype=torch.float64, seed=0, likelihood="bernoulli",
              support="real", sigma="learned_shared"):
    torch.manual_seed(seed)
    info = INFO if likelihood == "bernoulli" else DataInfo(name="t", shape=(6, 5), num_dims=30, support=support,
                                                           binarization="none")
    cfg = ModelConfig(latent_dim=3, hidden=list(hidden), activation=activation, likelihood=likelihood, sigma=sigma)
    return build_model(cfg, info, train_mean=torch.rand(30)).to(dtype)


def draws(batch, num_samples, dtype, seed=1):
    return binary_draws(batch, num_samples, 3, dtype, seed)


@pytest.mark.parametrize("activation", ["tanh", "relu", "elu", "softplus"])
@pytest.mark.parametrize("num_samples,beta,hidden", [(1, 1.0, (16,)), (3, 0.5, (16,)), (3, 1.0, (12, 9))])
def test_fast_bound_and_every_gradient_equal_autograd_in_float64(activation, num_samples, beta, hidden):
    model = model_for(activation, hidden)
    objective = ObjectiveConfig(num_samples=num_samples)
    x, eps = draws(13, num_samples, torch.float64)  # an odd batch size
    value, recon, kl, grads = autograd_reference(model, x, eps, beta, objective)
    fv, fr, fk = FastElbo(model, objective).forward_backward(x, eps, beta, 1.0 / 13)
    torch.testing.assert_close(fv, value, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(fr, recon, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(fk, kl, rtol=1e-12, atol=1e-12)
    for (name, p), g in zip(model.named_parameters(), grads):
        torch.testing.assert_close(p.grad, g, rtol=1e-10, atol=1e-12 * float(g.abs().max()), msg=name)


@pytest.mark.parametrize("activation", ["tanh", "relu", "softplus"])
@pytest.mark.parametrize("name,kl,num_samples,beta,hidden", [
    ("iwae", "analytic", 1, 1.0, (16,)), ("iwae", "analytic", 5, 1.0, (12, 9)), ("iwae", "mc", 4, 1.0, (16,)),
    ("elbo", "mc", 1, 1.0, (16,)), ("elbo", "mc", 3, 0.5, (12, 9))])
def test_iwae_and_monte_carlo_kl_bounds_and_every_gradient_equal_autograd_in_float64(activation, name, kl,
                                                                                      num_samples, beta, hidden):
    model = model_for(activation, hidden)
    objective = ObjectiveConfig(name=name, kl=kl, num_samples=num_samples)
    x, eps = draws(13, num_samples, torch.float64)
    value, recon, kl_term, grads = autograd_reference(model, x, eps, beta, objective)
    fv, fr, fk = FastElbo(model, objective).forward_backward(x, eps, beta, 1.0 / 13)
    torch.testing.assert_close(fv, value, rtol=1e-12, atol=1e-11)
    torch.testing.assert_close(fr, recon, rtol=1e-12, atol=1e-11)
    torch.testing.assert_close(fk, kl_term, rtol=1e-12, atol=1e-11)
    for (pname, p), g in zip(model.named_parameters(), grads):
        torch.testing.assert_close(p.grad, g, rtol=1e-10, atol=1e-12 * float(g.abs().max()), msg=pname)


def test_iwae_bound_by_hand_is_the_log_mean_of_the_importance_weights():
    """No hidden layer, K = 4: log (1/K) sum_k p(x|z_k) p(z_k) / q(z_k|x) with scipy-free closed-form densities,
    and with K = 1 the IWAE bound (and its gradient) is the Monte Carlo ELBO."""
    import math

    model = model_for(hidden=())
    x, eps = draws(3, 4, torch.float64)
    enc, dec = model.encoder.net[0], model.decoder.net[0]
    with torch.no_grad():
        mu, log_var = (x @ enc.weight.T + enc.bias).chunk(2, -1)
        z = mu + torch.exp(0.5 * log_var) * eps  # (4, 3, 3)
        p = torch.sigmoid(z @ dec.weight.T + dec.bias)
    log_px = (x * p.log() + (1 - x) * (1 - p).log()).sum(-1)
    log_pz = (-0.5 * z ** 2 - 0.5 * math.log(2 * math.pi)).sum(-1)
    log_qz = (-0.5 * (z - mu) ** 2 / log_var.exp() - 0.5 * log_var - 0.5 * math.log(2 * math.pi)).sum(-1)
    expected = (log_px + log_pz - log_qz).exp().mean(0).log()
    value, _, _ = FastElbo(model, ObjectiveConfig(name="iwae", num_samples=4)).forward_backward(x, eps, 1.0, 1.0)
    torch.testing.assert_close(value, expected, rtol=1e-12, atol=1e-12)
    one = eps[:1]
    value_1, _, _ = FastElbo(model, ObjectiveConfig(name="iwae", num_samples=1)).forward_backward(x, one, 1.0, 1.0)
    grads_1 = [p.grad.clone() for p in model.parameters()]
    elbo_1, _, _ = FastElbo(model, ObjectiveConfig(kl="mc", num_samples=1)).forward_backward(x, one, 1.0, 1.0)
    torch.testing.assert_close(value_1, elbo_1, rtol=1e-12, atol=1e-12)
    for p, g in zip(model.parameters(), grads_1):
        torch.testing.assert_close(p.grad, g, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("support,sigma", [("real", "0.5"), ("unit_interval", "0.1")])
def test_gaussian_with_a_fixed_sigma_equals_autograd(support, sigma):
    """Identity mean for real data, sigmoid mean for data in [0, 1]."""
    model = model_for(likelihood="gaussian", support=support, sigma=sigma)
    assert model.likelihood_module.mean_link == ("sigmoid" if support == "unit_interval" else "identity")
    assert fast_path_reason(model, RunConfig()) == ""
    objective = ObjectiveConfig(num_samples=2)
    g = torch.Generator().manual_seed(3)
    x = torch.rand(11, 30, generator=g, dtype=torch.float64)
    eps = torch.randn(2, 11, 3, generator=g, dtype=torch.float64)
    value, recon, kl, grads = autograd_reference(model, x, eps, 0.8, objective)
    fv, fr, fk = FastElbo(model, objective).forward_backward(x, eps, 0.8, 1.0 / 11)
    torch.testing.assert_close(fr, recon, rtol=1e-12, atol=1e-10)
    torch.testing.assert_close(fv, value, rtol=1e-12, atol=1e-10)
    torch.testing.assert_close(fk, kl, rtol=1e-12, atol=1e-12)
    for (name, p), g in zip(model.named_parameters(), grads):
        torch.testing.assert_close(p.grad, g, rtol=1e-10, atol=1e-12 * float(g.abs().max()), msg=name)


@pytest.mark.parametrize("activation,hidden,name", [("tanh", (16,), "elbo"), ("relu", (12, 9), "elbo"),
                                                    ("elu", (16,), "elbo"), ("softplus", (16,), "elbo"),
                                                    ("tanh", (12, 9), "iwae"), ("relu", (16,), "iwae")])
@pytest.mark.parametrize("onednn_min_macs", [0, 10**12])
def test_fast_path_matches_autograd_in_float32_and_reuses_buffers_across_batch_sizes(matmul_backend, activation,
                                                                                      hidden, name, onednn_min_macs,
                                                                                      monkeypatch):
    """float32 products go to oneDNN (activations inside the product where it has them) or to torch; with the
    oneDNN backend, every product above the size line (here: all, or none) goes to oneDNN."""
    import aevb.speed.fastpath as fastpath

    monkeypatch.setattr(fastpath, "ONEDNN_MIN_MACS", onednn_min_macs)
    model = model_for(activation=activation, hidden=hidden, dtype=torch.float32)
    objective = ObjectiveConfig(name=name, num_samples=2)
    beta = 0.7 if name == "elbo" else 1.0
    fast = FastElbo(model, objective)
    for batch in (100, 37, 100):  # full batch, last partial batch, full batch again
        x, eps = draws(batch, 2, torch.float32, seed=batch)
        value, recon, kl, grads = autograd_reference(model, x, eps, beta, objective)
        fv, fr, fk = fast.forward_backward(x, eps, beta, 1.0 / batch)
        torch.testing.assert_close(fv, value, rtol=1e-5, atol=1e-4)
        torch.testing.assert_close(fk, kl, rtol=1e-5, atol=1e-5)
        for (name, p), g in zip(model.named_parameters(), grads):
            torch.testing.assert_close(p.grad, g, rtol=1e-5, atol=1e-5 * float(g.abs().max()), msg=name)


def test_closed_form_kl_and_bernoulli_recon_by_hand():
    """One example, no hidden layer: the fast path's terms against the formulas written out."""
    model = model_for(hidden=())
    x, eps = draws(1, 1, torch.float64)
    enc, dec = model.encoder.net[0], model.decoder.net[0]
    with torch.no_grad():
        mu, log_var = (x @ enc.weight.T + enc.bias).chunk(2, -1)
        z = mu + torch.exp(0.5 * log_var) * eps[0]
        logits = z @ dec.weight.T + dec.bias
    recon = (x * torch.log(torch.sigmoid(logits)) + (1 - x) * torch.log(1 - torch.sigmoid(logits))).sum()
    kl = 0.5 * (mu ** 2 + log_var.exp() - 1 - log_var).sum()
    value, r, k = FastElbo(model, ObjectiveConfig()).forward_backward(x, eps, 0.5, 1.0)
    assert float(r) == pytest.approx(float(recon), rel=1e-12)
    assert float(k) == pytest.approx(float(kl), rel=1e-12)
    assert float(value) == pytest.approx(float(recon - 0.5 * kl), rel=1e-12)
    # d(-bound)/d(output bias) = sigmoid(l) - x
    torch.testing.assert_close(dec.bias.grad, (torch.sigmoid(logits) - x)[0])


@pytest.mark.parametrize("objective,train_cfg", [
    ({"num_samples": 1}, {}),
    ({"num_samples": 3, "beta": 0.5, "warmup_steps": 10}, {"weight_decay": 1.0, "grad_clip": 5.0}),
    ({"name": "iwae", "num_samples": 5}, {}),
])
def test_training_with_the_fast_path_gives_the_autograd_weights(tmp_path, monkeypatch, objective, train_cfg):
    assert_fast_epoch_equals_autograd(tmp_path, monkeypatch, FastElbo, 1e-4, objective=objective, train=train_cfg)


def test_trainer_uses_the_fast_path_exactly_when_it_applies():
    cfg = RunConfig()
    model = build_model(cfg.model, INFO)
    assert fast_path_reason(model, cfg) == ""
    assert isinstance(build_bound_module(model, cfg), FastElbo)
    for section, key, value in (("objective", "name", "iwae"), ("objective", "kl", "mc")):
        other = RunConfig()
        setattr(getattr(other, section), key, value)
        assert fast_path_reason(model, other) == ""
        assert isinstance(build_bound_module(model, other), FastElbo)
    cases = [
        ("train", "fast_path", False, "train.fast_path is off"),
        ("train", "compile", True, "train.compile"),
        ("objective", "beta", 0.5, "beta"),  # with iwae, below
    ]
    for section, key, value, why in cases:
        other = RunConfig()
        other.objective.name = "iwae" if key == "beta" else other.objective.name
        setattr(getattr(other, section), key, value)
        assert why in fast_path_reason(model, other)
        assert isinstance(build_bound_module(model, other), BoundModule)
    assert fast_path_reason(model, cfg, world_size=2) == ""  # under torchrun it averages its own gradients
    assert isinstance(build_bound_module(model, cfg, world_size=2), FastElbo)
    for sigma in ("learned_shared", "learned_per_dim", "predicted"):
        gaussian = model_for(likelihood="gaussian", sigma=sigma, dtype=torch.float32)
        assert "likelihood" in fast_path_reason(gaussian, cfg)
    assert "likelihood" in fast_path_reason(model_for(likelihood="laplace", sigma="1.0"), cfg)
    conv_cfg = ModelConfig(arch="conv", latent_dim=3, hidden=[16])
    conv = build_model(conv_cfg, DataInfo(name="t", shape=(8, 8), num_dims=64, support="binary", binarization="dynamic"))
    assert "encoder" in fast_path_reason(conv, cfg)


def test_a_non_finite_bound_takes_no_step_and_names_the_examples():
    model = model_for(dtype=torch.float32)
    params = list(model.parameters())
    optimizer = build_optimizer(params, TrainConfig())
    before = [p.detach().clone() for p in params]
    x, eps = draws(10, 1, torch.float32)
    eps[0, 4] = float("nan")
    sums, why = FastElbo(model, ObjectiveConfig()).optimizer_step(
        model, optimizer, params, x, eps, 1.0, torch.arange(100, 110), 10, 1, TrainConfig(), 1000, lambda flag: flag)
    assert sums is None
    assert "reconstruction term" in why and "[104]" in why
    for p, q in zip(params, before):
        assert torch.equal(p, q)
