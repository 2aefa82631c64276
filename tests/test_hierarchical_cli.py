"""Every command on a two-stochastic-layer run (scikit-learn digits, a few steps), from the CLI."""

import csv
import json
import signal

import numpy as np
import pytest
import torch
from conftest import run_cli

from aevb.training.checkpoint import find_checkpoint, load_run, read_state, read_tensors

# 1455 training digits / 50 -> 30 steps; IWAE K=3 through autograd (the fast path covers one layer only)
ARGS = ["--data", "digits", "--hidden", "32", "--epochs", "1", "--batch-size", "50", "--lr", "3e-3", "--quiet",
        "--set", "model.latent_dims=6,2", "--set", "model.stochastic_hidden=16", "--set", "objective.name=iwae",
        "--set", "objective.num_samples=3", "--set", "train.checkpoint_every=4", "--set", "train.tensorboard=false"]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("two_layer") / "run"
    r = run_cli("train", *ARGS, "--out", out)
    assert r.returncode == 0, r.stderr
    assert "test ELBO" in r.stdout
    return out


def test_two_layer_run_is_built_with_both_layers(run_dir):
    cfg, model, _ = load_run(run_dir)
    assert model.latent_dims == (6, 2) and cfg.model.latent_dim == 6
    assert any(k.startswith("posterior_layers.0.") for k in model.state_dict())


def test_two_layer_sigkill_then_resume_equals_the_uninterrupted_run(run_dir, tmp_path):
    killed = tmp_path / "killed"
    r = run_cli("train", *ARGS, "--out", killed, env_extra={"AEVB_TEST_KILL_AT_STEP": "10"})
    assert r.returncode == -signal.SIGKILL, (r.returncode, r.stderr)
    assert read_state(find_checkpoint(killed))["step"] == 8
    r = run_cli("train", "--resume", killed, "--quiet")
    assert r.returncode == 0, r.stderr
    a, b = read_tensors(find_checkpoint(run_dir)), read_tensors(find_checkpoint(killed))
    assert set(a) == set(b)
    for key in a:
        torch.testing.assert_close(b[key], a[key], rtol=1e-6, atol=1e-7, msg=key)


def test_two_layer_nan_guard_rolls_back_and_recovers(tmp_path):
    r = run_cli("train", *ARGS, "--out", tmp_path / "nan", env_extra={"AEVB_TEST_NAN_AT_STEP": "5",
                                                                       "AEVB_TEST_NAN_TIMES": "1"})
    assert r.returncode == 0, r.stderr
    assert "NaN guard: " in r.stdout and "rolled back to step 4" in r.stdout


def test_two_layer_evaluate_gives_log_px_above_the_elbo_and_active_units_per_layer(run_dir):
    r = run_cli("evaluate", run_dir, "--k", "200", "--json", "--threads", "1")
    assert r.returncode == 0, r.stderr
    result = json.loads(r.stdout)
    assert result["log_px"] >= result["elbo"]
    assert result["latent_dims"] == [6, 2] and len(result["active_units_per_layer"]) == 2
    assert result["active_units"] == sum(result["active_units_per_layer"])


def test_two_layer_score_and_encode(run_dir, tmp_path):
    r = run_cli("score", run_dir, "--k", "20", "--out", tmp_path / "scores.csv", "--threads", "1")
    assert r.returncode == 0, r.stderr
    rows = list(csv.DictReader(open(tmp_path / "scores.csv")))
    assert rows and all(float(row["log_px"]) >= float(row["elbo"]) - 5 for row in rows)
    r = run_cli("encode", run_dir, "--out", tmp_path / "z.npz")
    assert r.returncode == 0, r.stderr
    assert "layer 2: posterior mean and variance of q(z_2|x) by Monte Carlo, 256 samples" in r.stdout
    z = np.load(tmp_path / "z.npz")
    n = len(z["mu"])
    assert z["mu"].shape == (n, 6) and z["log_var"].shape == (n, 6)
    assert z["mu_2"].shape == (n, 2) and np.isfinite(z["log_var_2"]).all()


def test_two_layer_sample_reconstruct_plot_and_report(run_dir, tmp_path):
    for args in (["sample", run_dir, "-n", "16", "--out", tmp_path / "s.png"],
                 ["reconstruct", run_dir, "-n", "10", "--out", tmp_path / "r.png"],
                 ["plot", run_dir, "--out", tmp_path / "plots"],
                 ["report", run_dir, "--out", tmp_path / "report.html"]):
        r = run_cli(*args)
        assert r.returncode == 0, (args[0], r.stderr)
    assert (tmp_path / "s.png").stat().st_size > 0 and (tmp_path / "r.png").stat().st_size > 0
    assert {"manifold.png", "traversals.png", "samples.png"} <= {p.name for p in (tmp_path / "plots").iterdir()}
    assert (tmp_path / "report.html").stat().st_size > 0


@pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:DeprecationWarning")
def test_two_layer_torchscript_export_computes_every_conditional(run_dir, tmp_path):
    r = run_cli("export", run_dir, "--format", "torchscript", "--out", tmp_path)
    assert r.returncode == 0, r.stderr
    _, model, _ = load_run(run_dir)
    manifest = json.loads((tmp_path / "export.json").read_text())
    assert manifest["latent_dims"] == [6, 2] and set(manifest["layers"]) == {"posterior_2", "prior_1"}
    z1, z2 = torch.randn(5, 6), torch.randn(5, 2)
    with torch.no_grad():
        for stem, module, z in (("posterior_2", model.posterior_layers[0], z1), ("prior_1", model.prior_layers[0], z2)):
            mu, log_var = torch.jit.load(str(tmp_path / f"{stem}.pt"))(z)
            torch.testing.assert_close(mu, module(z).mean)
            torch.testing.assert_close(torch.exp(0.5 * log_var), module(z).stddev)


def test_two_layer_onnx_export_runs_in_onnxruntime(run_dir, tmp_path):
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    r = run_cli("export", run_dir, "--format", "onnx", "--out", tmp_path)
    assert r.returncode == 0, r.stderr
    _, model, _ = load_run(run_dir)
    z1 = torch.randn(7, 6)
    mu, log_var = ort.InferenceSession(str(tmp_path / "posterior_2.onnx")).run(None, {"z_1": z1.numpy()})
    with torch.no_grad():
        np.testing.assert_allclose(mu, model.posterior_layers[0](z1).mean.numpy(), rtol=1e-4, atol=1e-5)


@pytest.mark.slow
def test_two_layer_two_gloo_processes_equal_one_process(run_dir, tmp_path):
    from test_distributed import torchrun

    r = torchrun(*ARGS, "--out", tmp_path / "two")
    assert r.returncode == 0, r.stderr
    a, b = read_tensors(find_checkpoint(run_dir)), read_tensors(find_checkpoint(tmp_path / "two"))
    for key in a:
        if key.startswith("model."):
            torch.testing.assert_close(b[key], a[key], rtol=1e-5, atol=1e-6, msg=key)
