"""The NaN/inf guard: skip the step, name the term and the batch, roll back, lower the LR, retry, stop."""

import math

import torch
from conftest import run_cli, tiny_config

from aevb.training.checkpoint import find_checkpoint, load_run, read_state, read_tensors
from aevb.training.loop import train
from aevb.training.metrics import read_metrics


def test_one_poisoned_step_is_rolled_back_and_training_recovers_with_a_lower_lr(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("AEVB_TEST_NAN_AT_STEP", "5")
    monkeypatch.setenv("AEVB_TEST_NAN_TIMES", "1")
    cfg = tiny_config(tmp_path, train={"epochs": 2, "checkpoint_every": 2, "lr": 3e-3})
    run_dir = train(cfg)
    out = capsys.readouterr().out
    # eps of one example is NaN: z and so log p(x|z) are NaN; the analytic KL does not use z
    assert "NaN guard: reconstruction term E_q[log p(x|z)] is non-finite for 1 example(s)" in out
    assert "KL term" not in out.split("NaN guard:")[1].split("\n")[0]
    assert "at step 5 (epoch 1, batch 5); rolled back to step 4" in out
    records = read_metrics(run_dir)
    assert [r["epoch"] for r in records] == [1, 2]
    assert math.isclose(records[-1]["lr"], 3e-4, rel_tol=1e-9)  # lowered x0.1 once
    state = read_state(find_checkpoint(run_dir))
    assert state["step"] == 60 and math.isclose(state["lr_scale"], 0.1)
    assert all(torch.isfinite(v).all() for k, v in read_tensors(find_checkpoint(run_dir)).items()
               if v.is_floating_point())
    assert math.isfinite(records[-1]["valid/elbo"])


def test_a_batch_that_stays_bad_stops_with_a_message_and_a_finite_last_checkpoint(tmp_path):
    out = tmp_path / "run"
    r = run_cli("train", "--data", "digits", "--hidden", "16", "--latent-dim", "2", "--epochs", "1", "--quiet",
                "--batch-size", "50", "--set", "train.checkpoint_every=3", "--set", "train.max_nan_retries=2",
                "--out", out, env_extra={"AEVB_TEST_NAN_AT_STEP": "8"})
    assert r.returncode == 2
    err = r.stderr
    assert err.startswith("aevb train: error: non-finite training bound at step 8 (epoch 1, batch 8)"), err
    assert "reconstruction term" in err and "training-set indices [" in err
    assert "lowered the learning rate 2 time(s)" in err
    assert f"Last good checkpoint: {out}/checkpoints/step-00000006" in err
    assert r.stdout.count("NaN guard:") == 2
    _, model, _ = load_run(out)  # loadable and finite
    assert read_state(find_checkpoint(out))["step"] == 6
    assert all(torch.isfinite(p).all() for p in model.parameters())
