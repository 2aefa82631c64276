"""Scores for anomaly detection and latents for downstream use: a real anomaly check on digits,
the CSV and npz files of the commands against the library, and clear refusals."""

import csv

import numpy as np
import pytest
import torch
from conftest import run_cli, tiny_config

from aevb.inference.evaluate import encode, score_examples


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    from aevb.data import build_datasets
    from aevb.training.checkpoint import load_run
    from aevb.training.loop import train

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


def binary_digit_rows(n: int = 30) -> np.ndarray:
    """n of scikit-learn's digits thresholded to 0/1 (so no binarization draw is involved), in a
    shuffled order that is not the order of any split."""
    from sklearn.datasets import load_digits

    x = (load_digits().data > 8).astype(np.uint8)
    return x[np.random.default_rng(5).permutation(len(x))[:n]]


def read_rows(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def test_score_with_data_scores_every_row_of_the_file_in_input_order(trained, tmp_path):
    run_dir, model, info, splits = trained
    x = binary_digit_rows()
    np.save(tmp_path / "x.npy", x)
    np.savetxt(tmp_path / "x.csv", x[::-1], fmt="%d", delimiter=",")  # the same rows reversed, no header
    results = {}
    for name in ("x.npy", "x.csv"):
        out = tmp_path / f"{name}.scores.csv"
        r = run_cli("score", run_dir, "--data", tmp_path / name, "--k", "50", "--seed", "3", "--out", out)
        assert r.returncode == 0, r.stderr
        rows = read_rows(out)
        assert list(rows[0]) == ["index", "log_px", "elbo"]
        assert [int(row["index"]) for row in rows] == list(range(len(x)))  # every row, not a 10% split
        results[name] = np.array([[float(row["log_px"]), float(row["elbo"])] for row in rows])
    xt = torch.as_tensor(x, dtype=torch.float32)
    log_px, elbo = score_examples(model, xt, binarization="none", k=50, seed=3, progress=False)
    assert np.allclose(results["x.npy"], np.stack([log_px.numpy(), elbo.numpy()], 1), atol=2e-6)
    # row i is the score of x[i] alone (up to the Monte Carlo noise of K=50 draws), in input order
    alone = np.array([[float(v) for v in score_examples(model, xt[i:i + 1], k=50, seed=3, progress=False)]
                      for i in range(len(x))])
    # (measured: mean |difference| 0.14 nats in input order, 1.9 nats against the reversed order)
    assert np.abs(results["x.npy"] - alone).mean() < 0.4 and np.abs(results["x.npy"] - alone).max() < 1.5
    assert np.abs(results["x.npy"][::-1] - alone).mean() > 1.0  # the check can tell the orders apart
    # the CSV holds the rows reversed: its row i is the .npy's row N-1-i
    diff = np.abs(results["x.csv"] - results["x.npy"][::-1])
    assert diff.mean() < 0.4 and diff.max() < 1.5


def test_encode_with_data_encodes_every_row_of_the_file_in_input_order(trained, tmp_path):
    run_dir, model, info, splits = trained
    x = binary_digit_rows()
    labels = np.arange(len(x)) % 7
    np.savez(tmp_path / "x.npz", x=x, labels=labels)
    np.savetxt(tmp_path / "x.csv", x[::-1], fmt="%d", delimiter=",")
    r = run_cli("encode", run_dir, "--data", tmp_path / "x.npz", "--out", tmp_path / "z.npz")
    assert r.returncode == 0, r.stderr
    r = run_cli("encode", run_dir, "--data", tmp_path / "x.csv", "--out", tmp_path / "z.csv")
    assert r.returncode == 0, r.stderr
    xt = torch.as_tensor(x, dtype=torch.float32)
    with np.load(tmp_path / "z.npz", allow_pickle=False) as z:
        assert z["labels"].tolist() == labels.tolist()
        for i in range(len(x)):
            mu, log_var = encode(model, xt[i:i + 1])
            assert np.allclose(z["mu"][i], mu[0].numpy(), atol=1e-6)
            assert np.allclose(z["log_var"][i], log_var[0].numpy(), atol=1e-6)
        rows = read_rows(tmp_path / "z.csv")
        assert len(rows) == len(x)
        mu_csv = np.array([[float(row[f"mu_{d}"]) for d in range(4)] for row in rows])
        assert np.allclose(mu_csv, z["mu"][::-1], atol=1e-5)


def test_score_split_all_of_the_run_data_is_every_row_unshuffled(trained, tmp_path):
    from sklearn.datasets import load_digits

    run_dir, model, info, splits = trained
    out = tmp_path / "z.npz"
    r = run_cli("encode", run_dir, "--data", "digits", "--out", out)
    assert r.returncode == 0, r.stderr
    raw = load_digits()
    mu, _ = encode(model, torch.as_tensor(raw.data / 16, dtype=torch.float32))
    with np.load(out, allow_pickle=False) as z:
        assert z["labels"].tolist() == raw.target.tolist()
        assert np.allclose(z["mu"], mu.numpy(), atol=1e-5)


def test_score_command_on_a_named_split_matches_the_library(trained, tmp_path):
    run_dir, model, info, splits = trained
    out = tmp_path / "scores.csv"
    r = run_cli("score", run_dir, "--data", "digits", "--split", "valid", "--k", "40", "--seed", "2", "--out", out)
    assert r.returncode == 0, r.stderr
    rows = read_rows(out)
    assert list(rows[0]) == ["index", "log_px", "elbo", "label"]
    log_px, elbo = score_examples(model, splits.valid, binarization="dynamic", k=40, seed=2, progress=False)
    assert len(rows) == len(splits.valid)
    assert np.allclose([float(row["log_px"]) for row in rows], log_px.numpy(), atol=2e-6)
    assert np.allclose([float(row["elbo"]) for row in rows], elbo.numpy(), atol=2e-6)
    assert [int(row["label"]) for row in rows] == splits.valid_labels.tolist()


def test_encode_command_writes_posterior_parameters_and_labels(trained, tmp_path):
    run_dir, model, info, splits = trained
    out = tmp_path / "latents.npz"
    r = run_cli("encode", run_dir, "--out", out)  # no --data: the run's test split
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
