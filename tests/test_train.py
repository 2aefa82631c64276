"""The vertical slice end to end: data -> model -> ELBO -> Adam -> run directory."""

import json

import pytest
import torch

from aevb.checkpoint import load_run
from aevb.metrics import read_metrics
from aevb.train import train

from conftest import tiny_config


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
    from aevb.evaluate import evaluate_elbo

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
