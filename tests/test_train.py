"""The vertical slice end to end: data -> model -> ELBO -> Adam -> run directory."""

import json
import math

import pytest
import torch
from conftest import tiny_config

from aevb.training.checkpoint import load_run
from aevb.training.loop import train
from aevb.training.metrics import read_metrics


def test_tiny_run_improves_validation_elbo_and_writes_a_complete_run_directory(tmp_path):
    cfg = tiny_config(tmp_path, train={"epochs": 6})
    run_dir = train(cfg)
    records = read_metrics(run_dir)
    assert [r["epoch"] for r in records] == [1, 2, 3, 4, 5, 6]
    valid = [r["valid/elbo"] for r in records]
    assert valid[-1] > valid[0] + 1.0, valid
    for r in records:  # the reported bound is recon - KL, per example, in nats
        assert r["train/elbo"] == pytest.approx(r["train/recon"] - r["train/kl"], rel=1e-6)
    for name in ("config.json", "data.json", "summary.json", "plots/reconstructions.png", "plots/samples.png"):
        assert (run_dir / name).exists(), name
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["test"]["n"] == 180  # 10% of 1797 digits
    assert summary["test"]["elbo"] == pytest.approx(summary["test"]["recon"] - summary["test"]["kl"], rel=1e-6)

    # the saved weights reproduce the same test ELBO
    from aevb.data import build_datasets
    from aevb.inference.evaluate import evaluate_elbo

    cfg2, model, info = load_run(run_dir)
    splits, _ = build_datasets(cfg2.data, cfg2.model.likelihood)
    again = evaluate_elbo(model, splits.test, binarization=info.binarization, seed=cfg2.eval.seed)
    assert again["elbo"] == pytest.approx(summary["test"]["elbo"], abs=1e-4)


def test_same_seed_gives_identical_weights(tmp_path):
    a = train(tiny_config(tmp_path / "a", train={"epochs": 1}))
    b = train(tiny_config(tmp_path / "b", train={"epochs": 1}))
    _, ma, _ = load_run(a)
    _, mb, _ = load_run(b)
    for (ka, va), (kb, vb) in zip(ma.state_dict().items(), mb.state_dict().items()):
        assert torch.equal(va, vb), ka


def test_prior_gradient_is_the_gradient_of_the_gaussian_parameter_prior_over_n():
    from aevb.training.optim import add_prior_gradient

    torch.manual_seed(0)
    params = [torch.nn.Parameter(torch.randn(5, 3)), torch.nn.Parameter(torch.randn(3))]
    x = torch.randn(7, 5)
    num_train, coefficient = 40, 0.7

    def data_loss():
        return torch.tanh(x @ params[0] + params[1]).pow(2).sum(-1).mean()

    # reference: autograd of loss = data loss + c * ||theta||^2 / (2 N)
    full = data_loss() + coefficient * sum(p.pow(2).sum() for p in params) / (2 * num_train)
    expected = torch.autograd.grad(full, params)
    data_loss().backward()
    add_prior_gradient(params, coefficient, num_train)
    for p, g in zip(params, expected):
        torch.testing.assert_close(p.grad, g)
        # and the added part is exactly theta * c / N
    params[1].grad = torch.zeros(3)
    params[0].grad = torch.zeros(5, 3)
    add_prior_gradient(params, 1.0, num_train)
    torch.testing.assert_close(params[1].grad, params[1].detach() / num_train)


def test_iwae_schedule_is_3_to_the_i_passes_at_lr_times_10_to_the_minus_i_over_7():
    from aevb.config import RunConfig
    from aevb.training.loop import resolve_config
    from aevb.training.optim import IWAE_EPOCHS, learning_rate

    cfg = RunConfig()
    cfg.train.schedule = "iwae"
    cfg.train.epochs = 3280
    assert IWAE_EPOCHS == 3280 == sum(3 ** i for i in range(8))
    epoch = 0
    for i in range(8):
        for e in (epoch, epoch + 3 ** i - 1):  # first and last epoch of stage i
            assert math.isclose(learning_rate(cfg.train, e), 1e-3 * 10 ** (-i / 7), rel_tol=1e-12), (i, e)
        epoch += 3 ** i
    assert epoch == 3280
    assert math.isclose(learning_rate(cfg.train, 3279, lr_scale=0.1), 1e-4 * 10 ** (-1), rel_tol=1e-12)
    resolve_config(cfg)
    assert cfg.train.epochs == 3280
    # a 328-epoch run keeps the stage fractions: paper epoch = 10 * epoch
    cfg.train.epochs = 328
    for e, stage in ((0, 0), (1, 2), (4, 4), (12, 4), (13, 5), (36, 5), (37, 6), (109, 6), (110, 7), (327, 7)):
        assert math.isclose(learning_rate(cfg.train, e), 1e-3 * 10 ** (-stage / 7), rel_tol=1e-12), (e, stage)
    cfg.train.schedule = "constant"
    assert learning_rate(cfg.train, 3000) == cfg.train.lr


def test_early_stopping_keeps_the_best_checkpoint_and_stops(tmp_path, monkeypatch):
    import aevb.training.loop as train_module

    real = train_module.evaluate_elbo
    sequence = iter([-100.0, -90.0, -95.0, -96.0, -97.0, -98.0])

    def fake(model, x, **kw):
        result = real(model, x, **kw)
        if len(x) == 162:  # the validation split
            result["elbo"] = next(sequence)
        return result

    monkeypatch.setattr(train_module, "evaluate_elbo", fake)
    cfg = tiny_config(tmp_path, train={"epochs": 5, "eval_every": 5, "early_stopping": 2, "checkpoint_every": 5})
    run_dir = train(cfg)
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["steps"] == 20 and summary["best_step"] == 10 and summary["best_valid_elbo"] == -90.0
    assert summary["stopped"].startswith("early stopping: no better validation ELBO in 2 validations")
    from aevb.training.checkpoint import find_checkpoint, read_state

    assert read_state(find_checkpoint(run_dir, "best"))["step"] == 10
    assert read_state(find_checkpoint(run_dir, "last"))["step"] == 20
    valid = [r for r in read_metrics(run_dir) if "valid/elbo" in r]
    assert [r["step"] for r in valid] == [5, 10, 15, 20] and [r["valid/elbo"] for r in valid] == [-100, -90, -95, -96]
    _, best, _ = load_run(run_dir, which="best")
    _, last, _ = load_run(run_dir, which="last")
    assert not torch.equal(best.decoder.output_bias, last.decoder.output_bias)


def test_metrics_records_have_the_documented_keys(tmp_path):
    run_dir = train(tiny_config(tmp_path, train={"epochs": 1}))
    (record,) = read_metrics(run_dir)
    for key in ("step", "epoch", "examples", "train/elbo", "train/recon", "train/kl", "valid/elbo",
                "examples_per_s", "time_s", "lr"):
        assert key in record, key
    assert record["examples"] == 1455 and record["step"] == 30 and record["lr"] == 3e-3


def test_gradient_clipping_bounds_the_update_and_adagrad_trains(tmp_path):
    from aevb.training.optim import clip_or_check_gradients

    p = torch.nn.Parameter(torch.zeros(4))
    p.grad = torch.tensor([3.0, 4.0, 0.0, 0.0])
    norm = clip_or_check_gradients([p], max_norm=1.0)
    assert float(norm) == 5.0  # the norm before clipping
    torch.testing.assert_close(p.grad, torch.tensor([0.6, 0.8, 0.0, 0.0]))
    run_dir = train(tiny_config(tmp_path, train={"epochs": 2, "optimizer": "adagrad", "lr": 0.05, "grad_clip": 50.0}))
    valid = [r["valid/elbo"] for r in read_metrics(run_dir)]
    assert valid[1] > valid[0]


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf"), "inf and -inf"])
def test_the_unclipped_gradient_check_flags_exactly_the_non_finite_gradients(bad):
    """Without clipping the check is a sum of all gradient elements: compared here with the
    element-wise test torch.isfinite(g).all() on every parameter, for each kind of bad value."""
    from aevb.training.optim import clip_or_check_gradients

    g = torch.Generator().manual_seed(0)
    params = [torch.nn.Parameter(torch.zeros(s)) for s in ((30, 20), (20,), (5, 30))]
    for p in params:
        p.grad = torch.randn(p.shape, generator=g) * 1e3
    assert bool(torch.isfinite(clip_or_check_gradients(params, max_norm=0.0)))
    if bad == "inf and -inf":  # +inf and -inf in different tensors: their sum is NaN
        params[0].grad[3, 4], params[2].grad[1, 1] = float("inf"), -float("inf")
    else:
        params[1].grad[7] = bad
    assert not all(bool(torch.isfinite(p.grad).all()) for p in params)
    assert not bool(torch.isfinite(clip_or_check_gradients(params, max_norm=0.0)))


def test_a_non_finite_gradient_with_a_finite_bound_skips_the_step_and_names_the_parameter():
    from aevb.config import ModelConfig, ObjectiveConfig, TrainConfig
    from aevb.data import DataInfo
    from aevb.models.vae import build_model
    from aevb.training.step import BoundModule, optimizer_step

    torch.manual_seed(0)
    info = DataInfo(name="t", shape=(6,), num_dims=6, support="binary", binarization="none")
    model = build_model(ModelConfig(latent_dim=2, hidden=[8]), info)
    params = list(model.parameters())
    optimizer = torch.optim.Adam(params, lr=0.1)
    model.decoder.net[0].weight.register_hook(lambda g: g * float("inf"))
    before = [p.detach().clone() for p in params]
    x, eps = torch.ones(4, 6), torch.zeros(1, 4, 2)
    sums, why = optimizer_step(BoundModule(model, ObjectiveConfig()), model, optimizer, params, x, eps, 1.0,
                               torch.arange(4), 4, 1, TrainConfig(), 100, lambda flag: flag)
    assert sums is None
    assert why == "the bound is finite but the gradient of decoder.net.0.weight is not"
    assert all(torch.equal(p, b) for p, b in zip(params, before))  # no step was taken


def test_thread_policy_defaults_to_one_thread_unless_asked(monkeypatch):
    from aevb.training.loop import resolve_threads

    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    assert resolve_threads(0) == 1
    assert resolve_threads(3) == 3
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    assert resolve_threads(0) == 2


def test_metrics_go_to_tensorboard_when_a_writer_is_available(tmp_path, monkeypatch):
    import aevb.training.metrics as metrics

    calls = []

    class FakeWriter:
        def add_scalar(self, key, value, global_step):
            calls.append((key, value, global_step))

        def flush(self):
            pass

        def close(self):
            calls.append("closed")

    monkeypatch.setattr(metrics, "_tensorboard_writer", lambda folder: FakeWriter())
    run_dir = train(tiny_config(tmp_path, train={"epochs": 1}))
    (record,) = read_metrics(run_dir)
    scalars = {key: (value, step) for key, value, step in calls[:-1]}
    assert scalars["train/elbo"] == (record["train/elbo"], 30) and scalars["valid/elbo"][0] == record["valid/elbo"]
    assert "step" not in scalars and calls[-1] == "closed"


def test_throughput_benchmark_runs_all_methods_and_prints_the_ratios(capsys):
    import importlib.util

    from conftest import REPO

    spec = importlib.util.spec_from_file_location("train_throughput", REPO / "benchmarks" / "train_throughput.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    assert bench.main(["--threads", "1", "--repeats", "1", "--examples", "300", "--gemm-repeats", "2"]) == 0
    out = capsys.readouterr().out
    assert "4.10 MFLOP per image per step" in out  # 784-500-20: 2 * (3 * 814,000 - 392,000) / 1e6
    for kernel in ("torch", "onednn"):  # torch's mm (what the baselines use) and oneDNN (what aevb uses)
        assert f"GEMM with {kernel} (all 11 products)" in out, kernel
        assert f"aevb / GEMM limit, 11 products, {kernel}" in out, kernel
    for name in ("aevb / examples", "aevb / plain", "aevb / loader", "aevb / GEMM limit, 11 products, torch"):
        assert name in out, name


def test_training_on_all_data_with_empty_validation_and_test_splits(tmp_path, capsys):
    """data.valid_fraction = data.test_fraction = 0 (e.g. AEVB's Frey Face: all 1,965 faces) trains
    and says plainly that no test ELBO was computed instead of printing NaN."""
    cfg = tiny_config(tmp_path, data={"valid_fraction": 0.0, "test_fraction": 0.0}, train={"epochs": 2})
    run_dir = train(cfg)
    out = capsys.readouterr().out
    assert "test ELBO: not computed (the test split is empty" in out and "nan" not in out
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["test"] is None and summary["train_examples"] == 1797
    records = read_metrics(run_dir)
    assert len(records) == 2 and all(math.isfinite(r["train/elbo"]) for r in records)


def test_every_output_labels_a_kl_weight_other_than_one_as_not_an_elbo(tmp_path, capsys):
    run_dir = train(tiny_config(tmp_path / "b", objective={"beta": 0.5}, train={"epochs": 1}))
    assert "train beta=0.5 bound (not an ELBO)" in capsys.readouterr().out
    (record,) = read_metrics(run_dir)
    assert "train/elbo" not in record and record["train/bound_name"] == "beta=0.5 bound (not an ELBO)"
    assert record["train/bound"] == pytest.approx(record["train/recon"] - 0.5 * record["train/kl"], rel=1e-6)
    assert json.loads((run_dir / "summary.json").read_text())["train_bound"] == "beta=0.5 bound (not an ELBO)"
    from aevb.outputs.plots import plot_training_curves

    fig = plot_training_curves([record])
    assert fig.axes[0].get_legend_handles_labels()[1][0] == "train: beta=0.5 bound (not an ELBO)"
    train(tiny_config(tmp_path / "w", objective={"warmup_steps": 1000}, train={"epochs": 1}))
    assert "train KL warm-up bound (not an ELBO)" in capsys.readouterr().out
    train(tiny_config(tmp_path / "e", train={"epochs": 1}))
    out = capsys.readouterr().out
    assert "train ELBO" in out and "not an ELBO" not in out


def test_a_run_refused_for_its_data_leaves_no_run_directory(tmp_path):
    cfg = tiny_config(tmp_path, data={"binarize": "none"})  # grey digits under a bernoulli likelihood
    with pytest.raises(ValueError, match="binary values 0/1"):
        train(cfg)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("bad", [1.5, -0.25, float("nan")])
def test_dynamic_binarization_refuses_values_outside_the_unit_interval_and_nan(bad):
    from aevb.data import DataInfo, Splits
    from aevb.training.loop import check_data_fits

    info = DataInfo(name="t", shape=(3,), num_dims=3, support="binary", binarization="dynamic")
    good = torch.rand(4, 3)
    check_data_fits(None, Splits(good, good, good), info)  # values in [0, 1] pass
    x = good.clone()
    x[2, 1] = bad
    with pytest.raises(ValueError, match="valid: dynamic binarization needs values in"):
        check_data_fits(None, Splits(good, x, good), info)
