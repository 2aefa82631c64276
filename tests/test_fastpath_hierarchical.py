"""The hand-derived bound and gradient for L >= 2 stochastic layers (aevb.speed.hierarchical) equal autograd
through the shared objectives, and a scipy computation of the IWAE bound written out by hand."""

import numpy as np
import pytest
import torch
from conftest import assert_fast_epoch_equals_autograd, autograd_reference
from conftest import binary_draws as draws
from scipy import stats
from scipy.special import logsumexp

from aevb.config import ModelConfig, ObjectiveConfig, RunConfig
from aevb.data import DataInfo
from aevb.models.encoders import GaussianEncoder
from aevb.models.vae import build_model
from aevb.speed.fastpath import FastElbo, build_fast_bound, fast_path_reason
from aevb.speed.hierarchical import FastHierarchicalElbo
from aevb.training.loop import build_bound_module
from aevb.training.step import BoundModule

INFO = DataInfo(name="t", shape=(6, 5), num_dims=30, support="binary", binarization="dynamic")


def layered_model(dims, activation="tanh", hidden=(16,), stochastic_hidden=(7, 6), dtype=torch.float64, seed=0):
    torch.manual_seed(seed)
    cfg = ModelConfig(latent_dims=list(dims), hidden=list(hidden), stochastic_hidden=list(stochastic_hidden),
                      activation=activation)
    return build_model(cfg, INFO, train_mean=torch.rand(30)).to(dtype)


OBJECTIVES = [("iwae", "mc", 1, 1.0), ("iwae", "mc", 4, 1.0), ("elbo", "mc", 1, 1.0), ("elbo", "mc", 3, 0.5),
              ("elbo", "analytic", 3, 0.7)]


@pytest.mark.parametrize("activation", ["tanh", "relu", "softplus"])
@pytest.mark.parametrize("name,kl,num_samples,beta", OBJECTIVES)
@pytest.mark.parametrize("dims,stochastic_hidden", [((4, 3), (7, 6)), ((4, 3), ()), ((5, 3, 2), (6,))])
def test_layered_bound_its_terms_and_every_gradient_equal_autograd_in_float64(activation, name, kl, num_samples,
                                                                             beta, dims, stochastic_hidden):
    model = layered_model(dims, activation, stochastic_hidden=stochastic_hidden)
    objective = ObjectiveConfig(name=name, kl=kl, num_samples=num_samples)
    assert fast_path_reason(model, RunConfig(objective=objective)) == ""
    x, eps = draws(5, num_samples, sum(dims), torch.float64)
    value, recon, kl_term, grads = autograd_reference(model, x, eps, beta, objective)
    fast = build_fast_bound(model, objective)
    assert type(fast) is FastHierarchicalElbo
    fv, fr, fk = fast.forward_backward(x, eps, beta, 1.0 / 5)
    torch.testing.assert_close(fv, value, rtol=1e-12, atol=1e-11)
    torch.testing.assert_close(fr, recon, rtol=1e-12, atol=1e-11)
    torch.testing.assert_close(fk, kl_term, rtol=1e-12, atol=1e-11)
    for (pname, p), g in zip(model.named_parameters(), grads):
        assert float(g.abs().max()) > 0, pname  # every parameter takes part (the comparison is not 0 == 0)
        torch.testing.assert_close(p.grad, g, rtol=1e-10, atol=1e-12 * float(g.abs().max()), msg=pname)


def test_two_layer_iwae_bound_by_hand_with_scipy():
    """No hidden layers anywhere, K = 3: log (1/K) sum_k p(x|z1) p(z1|z2) p(z2) / (q(z1|x) q(z2|z1)) with the
    densities from scipy.stats on numpy arrays (nothing from torch.distributions or the model's code)."""
    model = layered_model((3, 2), hidden=(), stochastic_hidden=())
    x, eps = draws(4, 3, 5, torch.float64)
    value, _, _ = FastHierarchicalElbo(model, ObjectiveConfig(name="iwae", num_samples=3)).forward_backward(
        x, eps, 1.0, 1.0)

    def linear(layer, h):
        m = layer.net[0]
        return h @ m.weight.detach().numpy().T + m.bias.detach().numpy()

    xs, e = x.numpy(), eps.numpy()
    mu1, lv1 = np.split(linear(model.encoder, xs), 2, axis=-1)
    z1 = mu1 + np.exp(lv1 / 2) * e[..., :3]  # (3, 4, 3)
    mu2, lv2 = np.split(linear(model.posterior_layers[0], z1), 2, axis=-1)
    z2 = mu2 + np.exp(lv2 / 2) * e[..., 3:]
    m1, plv1 = np.split(linear(model.prior_layers[0], z2), 2, axis=-1)
    logits = linear(model.decoder, z1)
    log_w = (stats.bernoulli.logpmf(xs, 1 / (1 + np.exp(-logits))).sum(-1)
             + stats.norm.logpdf(z1, m1, np.exp(plv1 / 2)).sum(-1) + stats.norm.logpdf(z2).sum(-1)
             - stats.norm.logpdf(z1, mu1, np.exp(lv1 / 2)).sum(-1) - stats.norm.logpdf(z2, mu2, np.exp(lv2 / 2)).sum(-1))
    expected = logsumexp(log_w, axis=0) - np.log(3)
    np.testing.assert_allclose(value.numpy(), expected, rtol=1e-12)


@pytest.mark.parametrize("name,activation", [("iwae", "tanh"), ("elbo", "relu")])
@pytest.mark.parametrize("onednn_min_macs", [0, 10**12])
def test_layered_fast_path_matches_autograd_in_float32_and_reuses_buffers_across_batch_sizes(
        matmul_backend, name, activation, onednn_min_macs, monkeypatch):
    """Every product on oneDNN (line 0) or none (with the oneDNN backend), or torch's; batch 100, 37, 100."""
    import aevb.speed.fastpath as fastpath

    monkeypatch.setattr(fastpath, "ONEDNN_MIN_MACS", onednn_min_macs)
    model = layered_model((4, 3), activation, hidden=(12, 9), dtype=torch.float32)
    objective = ObjectiveConfig(name=name, kl="mc", num_samples=2)
    beta = 0.7 if name == "elbo" else 1.0
    fast = build_fast_bound(model, objective)
    for batch in (100, 37, 100):
        x, eps = draws(batch, 2, 7, torch.float32, seed=batch)
        value, recon, kl, grads = autograd_reference(model, x, eps, beta, objective)
        fv, fr, fk = fast.forward_backward(x, eps, beta, 1.0 / batch)
        torch.testing.assert_close(fv, value, rtol=1e-5, atol=1e-4)
        torch.testing.assert_close(fk, kl, rtol=1e-5, atol=1e-4)
        for (pname, p), g in zip(model.named_parameters(), grads):
            torch.testing.assert_close(p.grad, g, rtol=1e-5, atol=1e-5 * float(g.abs().max()), msg=pname)


@pytest.mark.parametrize("objective", [{"name": "iwae", "num_samples": 3}, {"kl": "mc", "num_samples": 2}])
def test_training_two_layers_with_the_fast_path_gives_the_autograd_weights(tmp_path, monkeypatch, objective):
    assert_fast_epoch_equals_autograd(tmp_path, monkeypatch, FastHierarchicalElbo, 1e-5, objective=objective,
                                      model={"latent_dims": [4, 2], "stochastic_hidden": [8]})


def test_trainer_uses_the_layered_fast_path_exactly_when_it_applies():
    model = layered_model((4, 3), dtype=torch.float32)
    for name, kl in (("iwae", "analytic"), ("elbo", "mc"), ("elbo", "analytic")):
        cfg = RunConfig(objective=ObjectiveConfig(name=name, kl=kl))
        assert fast_path_reason(model, cfg) == ""
        module = build_bound_module(model, cfg)
        assert type(module) is FastHierarchicalElbo and isinstance(module, FastElbo)  # the trainer's step test
    one = layered_model((4,), dtype=torch.float32)
    assert type(build_bound_module(one, RunConfig())) is FastElbo
    cfg = RunConfig(objective=ObjectiveConfig(name="iwae"))
    model.posterior_layers[0] = GaussianEncoder(torch.nn.Sequential(torch.nn.Linear(4, 6)), 3)  # not a nets.MLP
    assert "stochastic layer above z_1" in fast_path_reason(model, cfg)
    assert type(build_bound_module(model, cfg)) is BoundModule
