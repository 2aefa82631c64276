"""A run killed with SIGKILL mid-epoch and resumed ends where an uninterrupted run ends."""

import json
import signal

import torch
from conftest import run_cli

from aevb.training.checkpoint import find_checkpoint, list_checkpoints, read_state, read_tensors
from aevb.training.metrics import read_metrics

ARGS = ["--data", "digits", "--hidden", "32", "--latent-dim", "4", "--epochs", "2", "--batch-size", "50",
        "--lr", "3e-3", "--quiet", "--set", "train.checkpoint_every=4", "--set", "train.eval_every=0"]


def test_sigkill_mid_epoch_then_resume_equals_uninterrupted_run(tmp_path):
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    r = run_cli("train", *ARGS, "--out", whole)
    assert r.returncode == 0, r.stderr

    # 1455 training digits / 50 -> 30 steps per epoch; die after step 10 (last checkpoint: step 8)
    r = run_cli("train", *ARGS, "--out", killed, env_extra={"AEVB_TEST_KILL_AT_STEP": "10"})
    assert r.returncode == -signal.SIGKILL, (r.returncode, r.stderr)
    ckpt = find_checkpoint(killed, "last")
    state = read_state(ckpt)
    assert (state["step"], state["epoch"], state["batch"]) == (8, 0, 8)  # mid-epoch: position recorded
    assert not (killed / "summary.json").exists()

    r = run_cli("train", "--resume", killed, "--quiet")
    assert r.returncode == 0, r.stderr
    assert "resuming" in r.stdout and "step-00000008" in r.stdout

    a, b = read_tensors(find_checkpoint(whole)), read_tensors(find_checkpoint(killed))
    assert read_state(find_checkpoint(killed))["step"] == 60
    assert set(a) == set(b)
    for key in a:  # weights, Adam moments, RNG states
        torch.testing.assert_close(b[key], a[key], rtol=1e-6, atol=1e-7, msg=key)
    ma, mb = read_metrics(whole), read_metrics(killed)
    assert [m["epoch"] for m in mb] == [1, 2]  # no duplicated records after the resume
    for ra, rb in zip(ma, mb):
        for key in ("train/elbo", "train/recon", "train/kl", "valid/elbo", "step", "lr"):
            assert abs(ra[key] - rb[key]) < 1e-5, (key, ra[key], rb[key])
    sa = json.loads((whole / "summary.json").read_text())["test"]["elbo"]
    sb = json.loads((killed / "summary.json").read_text())["test"]["elbo"]
    assert abs(sa - sb) < 1e-5
    assert len(list_checkpoints(killed)) == 2  # keep_checkpoints


def test_resume_refuses_to_change_the_model(tmp_path):
    out = tmp_path / "run"
    r = run_cli("train", *ARGS, "--epochs", "1", "--out", out)
    assert r.returncode == 0, r.stderr
    r = run_cli("train", "--resume", out, "--hidden", "64")
    assert r.returncode == 2
    assert "aevb train: error: --resume" in r.stderr and "model.hidden cannot change" in r.stderr
