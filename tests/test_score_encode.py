"""Scores for anomaly detection and latents for downstream use: a real anomaly check on digits,
the CSV and npz files of the commands against the library, and clear refusals."""

import csv

import numpy as np
import pytest
import torch

from aevb.evaluate import encode, score_examples

from conftest import run_cli, tiny_config


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    from aevb.checkpoint import load_run
    from aevb.data import build_datasets
    from aevb.train import train

    cfg = tiny_config(tmp_path_factory.mktemp("score"), train={"epochs": 10})
    run_dir = train(cfg)
    cfg, model, info = load_run(run_dir)
    splits, _ = build_datasets(cfg.data, cfg.model.likelihood)
    return run_dir, model, info, splits


def fraction_ranked_above(inside: torch.Tensor, outside: torch.Tensor) -> float:
    """Area under the ROC curve: P(score of an in-distribution example > score of an outlier)."""
    return float((inside[:, None] > outside[None, :]).double().mean())


def test_in_distribution_digits_score_higher_than_noisy_or_inverted_digits(trained):
    _, model, info, splits = trained
    x = splits.test
    g = torch.Generator().manual_seed(0)
    noisy = torch.where(torch.rand(x.shape, generator=g) < 0.5, torch.rand(x.shape, generator=g), x)
    inverted = 1 - x
    scores = {name: score_examples(model, data, binarization="dynamic", k=200, progress=False)[0]
              for name, data in (("clean", x), ("noisy", noisy), ("inverted", inverted))}
    for outlier in ("noisy", "inverted"):
        assert scores["clean"].mean() > scores[outlier].mean() + 5
        assert fraction_ranked_above(scores["clean"], scores[outlier]) > 0.95


def test_score_command_writes_one_row_per_example_in_input_order(trained, tmp_path):
    run_dir, model, info, splits = trained
    out = tmp_path / "scores.csv"
    r = run_cli("score", run_dir, "--data", "digits", "--split", "valid", "--k", "40", "--seed", "2", "--out", out)
    assert r.returncode == 0, r.stderr
    with open(out) as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["index", "log_px", "elbo", "label"]
    log_px, elbo = score_examples(model, splits.valid, binarization="dynamic", k=40, seed=2, progress=False)
    assert len(rows) == len(splits.valid)
    assert [int(row["index"]) for row in rows] == list(range(len(rows)))
    assert np.allclose([float(row["log_px"]) for row in rows], log_px.numpy(), atol=2e-6)
    assert np.allclose([float(row["elbo"]) for row in rows], elbo.numpy(), atol=2e-6)
    assert [int(row["label"]) for row in rows] == splits.valid_labels.tolist()
    assert np.mean([float(row["elbo"]) for row in rows]) < np.mean([float(row["log_px"]) for row in rows])


def test_encode_command_writes_posterior_parameters_and_labels(trained, tmp_path):
    run_dir, model, info, splits = trained
    out = tmp_path / "latents.npz"
    r = run_cli("encode", run_dir, "--data", "digits", "--out", out)
    assert r.returncode == 0, r.stderr
    with np.load(out, allow_pickle=False) as z:
        assert sorted(z.files) == ["labels", "log_var", "mu"]
        mu, log_var = encode(model, splits.test)
        assert np.allclose(z["mu"], mu.numpy()) and np.allclose(z["log_var"], log_var.numpy())
        assert z["labels"].tolist() == splits.test_labels.tolist()
        assert z["mu"].shape == (len(splits.test), 4)


def test_score_refuses_data_of_another_shape_and_unknown_names(trained, tmp_path):
    run_dir = trained[0]
    r = run_cli("score", run_dir, "--data", "mnist5k", "--k", "2", "--out", tmp_path / "s.csv")
    assert r.returncode == 2 and "784" in r.stderr and "64" in r.stderr and "Traceback" not in r.stderr
    r = run_cli("encode", run_dir, "--data", "no_such_set", "--out", tmp_path / "l.npz")
    assert r.returncode == 2 and "no_such_set" in r.stderr and "digits" in r.stderr
    assert not (tmp_path / "s.csv").exists()


def test_encode_command_writes_csv_for_a_csv_name_and_refuses_other_types(trained, tmp_path):
    run_dir, model, info, splits = trained
    out = tmp_path / "codes.csv"
    r = run_cli("encode", run_dir, "--data", "digits", "--split", "valid", "--out", out)
    assert r.returncode == 0, r.stderr
    with open(out) as f:
        rows = list(csv.DictReader(f))
    mu, log_var = encode(model, splits.valid)
    assert list(rows[0])[:2] == ["mu_0", "mu_1"] and list(rows[0])[-1] == "label"
    assert len(rows) == len(splits.valid)
    assert np.allclose([[float(row[f"mu_{d}"]) for d in range(4)] for row in rows], mu.numpy(), atol=1e-5)
    assert np.allclose([[float(row[f"log_var_{d}"]) for d in range(4)] for row in rows], log_var.numpy(), atol=1e-5)
    r = run_cli("encode", run_dir, "--out", tmp_path / "codes.txt")
    assert r.returncode == 2 and ".npz or .csv" in r.stderr
