"""The hand-derived ELBO gradient (aevb.speed.fastpath) equals autograd through the shared objective."""

import pytest
import torch
from conftest import tiny_config

from aevb.config import ModelConfig, ObjectiveConfig, RunConfig, TrainConfig
from aevb.data import DataInfo
from aevb.models.vae import build_model
from aevb.speed.fastpath import FastElbo, fast_path_reason
from aevb.training.loop import build_bound_module, train
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


def autograd_reference(model, x, eps, beta, objective):
    """Bound, recon, KL and d(-mean bound)/dtheta by autograd through objectives.elbo."""
    model.zero_grad(set_to_none=True)
    value, recon, kl = BoundModule(model, objective)(x, eps, beta)
    (-value.sum() / len(x)).backward()
    grads = [p.grad.clone() for p in model.parameters()]
    model.zero_grad(set_to_none=True)
    return value.detach(), recon.detach(), kl.detach(), grads


def draws(batch, num_samples, dtype, seed=1):
    g = torch.Generator().manual_seed(seed)
    x = (torch.rand(batch, 30, generator=g) < torch.rand(30, generator=g)).to(dtype)  # binary, uneven rates
    return x, torch.randn(num_samples, batch, 3, generator=g).to(dtype)


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


@pytest.mark.parametrize("activation,hidden", [("tanh", (16,)), ("relu", (12, 9)), ("elu", (16,)), ("softplus", (16,))])
def test_fast_path_matches_autograd_in_float32_and_reuses_buffers_across_batch_sizes(matmul_backend, activation,
                                                                                      hidden):
    """float32 products go to oneDNN (activations inside the product where it has them) or to torch."""
    model = model_for(activation=activation, hidden=hidden, dtype=torch.float32)
    fast = FastElbo(model, ObjectiveConfig(num_samples=2))
    for batch in (100, 37, 100):  # full batch, last partial batch, full batch again
        x, eps = draws(batch, 2, torch.float32, seed=batch)
        value, recon, kl, grads = autograd_reference(model, x, eps, 0.7, ObjectiveConfig(num_samples=2))
        fv, fr, fk = fast.forward_backward(x, eps, 0.7, 1.0 / batch)
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
])
def test_training_with_the_fast_path_gives_the_autograd_weights(tmp_path, monkeypatch, objective, train_cfg):
    """One epoch of the digits (29 batches of 50 and a last partial batch of 5) both ways."""
    from aevb.training.checkpoint import load_run

    calls, real = [], FastElbo.forward_backward
    monkeypatch.setattr(FastElbo, "forward_backward", lambda self, x, *a: calls.append(len(x)) or real(self, x, *a))
    runs = []
    for fast in (True, False):
        cfg = tiny_config(tmp_path / str(fast), objective=objective,
                          train={"epochs": 1, "fast_path": fast, **train_cfg})
        runs.append(load_run(train(cfg)))
        assert calls == [50] * 29 + [5]  # every step of the fast run took the fast path; the autograd run added none
    (_, a, _), (_, b, _) = runs
    for (name, pa), pb in zip(a.named_parameters(), b.parameters()):
        torch.testing.assert_close(pa, pb, rtol=1e-4, atol=1e-4, msg=name)


def test_trainer_uses_the_fast_path_exactly_when_it_applies():
    cfg = RunConfig()
    model = build_model(cfg.model, INFO)
    assert fast_path_reason(model, cfg) == ""
    assert isinstance(build_bound_module(model, cfg), FastElbo)
    cases = [
        ("train", "fast_path", False, "train.fast_path is off"),
        ("train", "compile", True, "train.compile"),
        ("objective", "name", "iwae", "objective iwae"),
        ("objective", "kl", "mc", "kl=mc"),
    ]
    for section, key, value, why in cases:
        other = RunConfig()
        setattr(getattr(other, section), key, value)
        assert why in fast_path_reason(model, other)
        assert isinstance(build_bound_module(model, other), BoundModule)
    assert "DDP" in fast_path_reason(model, cfg, world_size=2)
    assert isinstance(build_bound_module(model, cfg, world_size=2), BoundModule)
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


def sparse_draws(batch, num_samples, dtype, density, seed=2):
    g = torch.Generator().manual_seed(seed)
    x = (torch.rand(batch, 30, generator=g) < density).to(dtype)
    x[3] = 0  # an example with no pixel on: an empty sum
    return x, torch.randn(num_samples, batch, 3, generator=g).to(dtype)


@pytest.mark.parametrize("density,gathers", [(0.12, True), (0.6, False)])
def test_binary_first_layer_as_row_gathers_equals_autograd(density, gathers):
    """Sparse x: the first layer's products as embedding_bag sums; dense x: the dense products on the
    column-major weight. Both give autograd's bound and gradients."""
    model = model_for(hidden=(16,))
    objective = ObjectiveConfig(num_samples=2)
    x, eps = sparse_draws(17, 2, torch.float64, density)
    value, recon, kl, grads = autograd_reference(model, x, eps, 1.0, objective)
    fast = FastElbo(model, objective)
    assert fast.sparse is not None and model.encoder.net[0].weight.t().is_contiguous()
    assert fast.sparse.prepare(x) is gathers  # the test exercises the path it names
    fv, fr, fk = fast.forward_backward(x, eps, 1.0, 1.0 / 17)
    torch.testing.assert_close(fv, value, rtol=1e-12, atol=1e-12)
    for (name, p), g in zip(model.named_parameters(), grads):
        assert p.grad.stride() == p.stride(), name
        torch.testing.assert_close(p.grad, g, rtol=1e-10, atol=1e-12 * float(g.abs().max()), msg=name)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16])
def test_sparse_indices_are_the_ones_grouped_by_example_and_by_pixel(dtype):
    """prepare's bags against their definition, built in Python: bag b lists the pixels i with x_bi = 1
    in increasing order, bag i (transposed) the examples b with x_bi = 1; also for a non-contiguous x."""
    from aevb.speed.fastpath import SparseBinaryInput

    layer = torch.nn.Linear(30, 4)
    sparse = SparseBinaryInput(layer)
    x, _ = sparse_draws(17, 1, dtype, 0.12)
    for batch in (x, torch.cat([x, x], 1)[:, ::2]):  # the second has strides (60, 2)
        assert sparse.prepare(batch)
        on = [[i for i in range(30) if batch[b, i] == 1] for b in range(17)]
        bags = [sparse.cols[sparse.offsets[b]:sparse.offsets[b + 1]].tolist() for b in range(17)]
        assert bags == on and sparse.offsets[-1] == sum(map(len, on))
        by_pixel = [[b for b in range(17) if batch[b, i] == 1] for i in range(30)]
        assert [sparse.rows[sparse.offsets_t[i]:sparse.offsets_t[i + 1]].tolist() for i in range(30)] == by_pixel
        assert sparse.cols.dtype == sparse.rows.dtype == torch.int64
    assert sparse.prepare(x.to(torch.bfloat16)) is False  # numpy has no bfloat16: the dense products


def test_column_major_weight_trains_like_the_dense_path_through_a_checkpoint_round_trip(matmul_backend):
    """Fused Adam on the re-laid weight, with moments read back contiguous (as from a checkpoint), equals
    the same steps on an untouched model: optim.step_optimizer re-lays the moments to the weight's strides first."""
    from aevb.training.checkpoint import flatten_optimizer_state, unflatten_optimizer_state

    models = [model_for(hidden=(16,), dtype=torch.float32, seed=5) for _ in range(2)]
    fasts = [FastElbo(models[0], ObjectiveConfig(), sparse_input=True),
             FastElbo(models[1], ObjectiveConfig(), sparse_input=False)]
    assert not models[0].encoder.net[0].weight.is_contiguous() and models[1].encoder.net[0].weight.is_contiguous()
    train_cfg = TrainConfig(lr=0.01)
    opts = [build_optimizer(list(m.parameters()), train_cfg) for m in models]

    def steps(seeds):
        for seed in seeds:
            x, eps = sparse_draws(20, 1, torch.float32, 0.15, seed=seed)
            for m, f, o in zip(models, fasts, opts):
                sums, why = f.optimizer_step(m, o, list(m.parameters()), x, eps, 1.0, torch.arange(20), 20, 1,
                                             train_cfg, 1000, lambda flag: flag)
                assert sums is not None, why

    steps(range(3))
    tensors, meta = flatten_optimizer_state(opts[0].state_dict())
    state = unflatten_optimizer_state({k: v.contiguous() for k, v in tensors.items()}, meta)
    opts[0] = build_optimizer(list(models[0].parameters()), train_cfg)
    opts[0].load_state_dict(state)
    steps(range(3, 8))
    for (name, a), b in zip(models[0].named_parameters(), models[1].parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, msg=name)


def test_non_binary_x_takes_the_dense_products_even_when_gathers_were_asked_for():
    model = model_for(likelihood="gaussian", support="real", sigma="0.5")
    fast = FastElbo(model, ObjectiveConfig(), sparse_input=True)
    g = torch.Generator().manual_seed(4)
    x = torch.where(torch.rand(9, 30, generator=g) < 0.1, torch.rand(9, 30, generator=g, dtype=torch.float64) + 0.5,
                    torch.zeros((), dtype=torch.float64))  # sparse, but not 0/1
    eps = torch.randn(1, 9, 3, generator=g, dtype=torch.float64)
    assert fast.sparse.prepare(x) is False
    value, recon, kl, grads = autograd_reference(model, x, eps, 1.0, ObjectiveConfig())
    fv, _, _ = fast.forward_backward(x, eps, 1.0, 1.0 / 9)
    torch.testing.assert_close(fv, value, rtol=1e-12, atol=1e-10)
    for (name, p), g in zip(model.named_parameters(), grads):
        torch.testing.assert_close(p.grad, g, rtol=1e-10, atol=1e-12 * float(g.abs().max()), msg=name)


@pytest.mark.parametrize("density,gathers", [(0.12, True), (0.6, False)])
def test_column_major_first_layer_in_float32_equals_autograd_with_either_matrix_product_backend(
        matmul_backend, density, gathers):
    """The float32 products of the column-major weight (oneDNN takes the transposed views as they are)."""
    model = model_for(hidden=(16,), dtype=torch.float32)
    objective = ObjectiveConfig(num_samples=2)
    x, eps = sparse_draws(17, 2, torch.float32, density)
    value, recon, kl, grads = autograd_reference(model, x, eps, 1.0, objective)
    fast = FastElbo(model, objective, sparse_input=True)
    assert fast.sparse.prepare(x) is gathers
    fv, fr, fk = fast.forward_backward(x, eps, 1.0, 1.0 / 17)
    torch.testing.assert_close(fv, value, rtol=1e-5, atol=1e-4)
    for (name, p), g in zip(model.named_parameters(), grads):
        assert p.grad.stride() == p.stride(), name
        torch.testing.assert_close(p.grad, g, rtol=1e-5, atol=1e-5 * float(g.abs().max()), msg=name)


def test_gathers_are_the_default_only_beside_torchs_products(matmul_backend):
    """float32 with oneDNN's products: dense first layer, row-major weight; with torch's: gathers, column-major."""
    model = model_for(hidden=(16,), dtype=torch.float32)
    fast = FastElbo(model, ObjectiveConfig())
    weight = model.encoder.net[0].weight
    if matmul_backend == "onednn":
        assert fast.sparse is None and weight.is_contiguous()
    else:
        assert fast.sparse is not None and weight.t().is_contiguous()
    assert FastElbo(model_for(hidden=(16,)), ObjectiveConfig()).sparse is not None  # float64 never goes to oneDNN
