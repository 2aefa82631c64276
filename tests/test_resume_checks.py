"""--resume checks what it resumes: an edited config.json, a changed data set and a tampered
state.json are refused with a message saying what differs (issue 21, cases 3 and 4)."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from conftest import tiny_config

from aevb.config import RunConfig
from aevb.data.fingerprint import fingerprint_splits
from aevb.training.checkpoint import CheckpointError, find_checkpoint, read_state
from aevb.training.loop import train
from aevb.training.state import validate_state


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """A 1-epoch digits run (30 steps, checkpoint step-00000030)."""
    tmp = tmp_path_factory.mktemp("base")
    return train(tiny_config(tmp, train={"epochs": 1, "eval_every": 0}))


@pytest.fixture
def run_dir(finished_run, tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(finished_run, copy)
    cfg = json.loads((copy / "config.json").read_text())
    cfg["out"] = str(copy)
    (copy / "config.json").write_text(json.dumps(cfg))
    return copy


def resume(run_dir, **train_changes):
    cfg = RunConfig.load(run_dir / "config.json")
    for key, value in train_changes.items():
        setattr(cfg.train, key, value)
    return train(cfg, resume=True)


def test_an_edited_config_json_is_refused_naming_the_field_and_both_values(run_dir):
    cfg = json.loads((run_dir / "config.json").read_text())
    cfg["train"]["lr"] = 0.05  # the run trained with 0.003
    (run_dir / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError) as e:
        resume(run_dir, epochs=2)
    message = str(e.value)
    assert "config.json was changed after the run started" in message
    assert "train.lr is 0.05 in config.json but 0.003 in the checkpoint" in message
    assert read_state(find_checkpoint(run_dir))["step"] == 30  # nothing trained


def test_a_resumable_change_is_taken_and_written_to_config_json(run_dir):
    resume(run_dir, epochs=2)
    assert read_state(find_checkpoint(run_dir))["step"] == 60
    assert json.loads((run_dir / "config.json").read_text())["train"]["epochs"] == 2
    resume(run_dir)  # the next resume sees the same config in config.json and the checkpoint
    assert read_state(find_checkpoint(run_dir))["step"] == 60


def test_a_data_file_that_grew_is_refused_with_both_fingerprints(tmp_path):
    rng = np.random.default_rng(0)
    path = tmp_path / "rows.npy"
    np.save(path, (rng.random((300, 16)) < 0.3).astype(np.uint8))
    cfg = tiny_config(tmp_path, data={"name": str(path)}, train={"epochs": 1})
    run_dir = train(cfg)
    before = read_state(find_checkpoint(run_dir))["data_fingerprint"]
    np.save(path, (rng.random((600, 16)) < 0.3).astype(np.uint8))
    with pytest.raises(CheckpointError) as e:
        resume(run_dir, epochs=2)
    message = str(e.value)
    assert "the data changed since the run started" in message and str(path) in message
    assert f"when the run started {before}" in message and "blake2b" in message
    assert before.split(",")[0] in message and "train 486" in message  # 600 rows: 486 for training now


def test_the_fingerprint_changes_with_one_value_and_not_with_a_copy():
    x = torch.rand(50, 8)
    empty = torch.zeros(0, 8)
    a = fingerprint_splits(x, empty, x[:10])
    assert a == fingerprint_splits(x.clone(), empty, x[:10].clone())
    y = x.clone()
    y[3, 4] = torch.nextafter(y[3, 4], torch.tensor(2.0))  # one float32 ulp
    assert a != fingerprint_splits(y, empty, x[:10])
    assert a.startswith("train 50, valid 0, test 10 x 8 float32, blake2b ")


@pytest.mark.parametrize("edit, expected", [
    (lambda s: s.update(step="abc"), "step is 'abc' (expected an integer >= 0)"),
    (lambda s: s.update(step=999999), "step is 999999 but the folder is step-00000030"),
    (lambda s: s.update(lr_scale=-1), "lr_scale is -1 (expected a finite number > 0)"),
    (lambda s: s.pop("optimizer"), "optimizer is missing"),
    (lambda s: s.update(sums=[1, 2]), "sums is [1, 2] (expected a list of 4 numbers"),
])
def test_a_tampered_state_json_is_refused_saying_what_is_wrong(run_dir, edit, expected):
    path = find_checkpoint(run_dir) / "state.json"
    state = json.loads(path.read_text())
    edit(state)
    path.write_text(json.dumps(state))
    with pytest.raises(CheckpointError) as e:
        resume(run_dir, epochs=2)
    assert expected in str(e.value) and "not a valid training state" in str(e.value)


def test_a_state_json_holding_a_list_is_named_as_such(run_dir):
    path = find_checkpoint(run_dir) / "state.json"
    path.write_text("[1, 2, 3]")
    with pytest.raises(CheckpointError) as e:
        resume(run_dir, epochs=2)
    assert "holds a JSON list, expected a JSON object with step, epoch" in str(e.value)
    assert "weights only" not in str(e.value)


def test_a_consistent_looking_but_impossible_position_is_refused(run_dir):
    path = find_checkpoint(run_dir) / "state.json"
    state = json.loads(path.read_text())
    state["epoch"], state["batch"] = 0, 29  # step 30 = 1 x 30 + 0; 0 x 30 + 29 = 29
    path.write_text(json.dumps(state))
    with pytest.raises(CheckpointError, match=r"do not fit 30 steps per epoch"):
        resume(run_dir, epochs=2)


def test_every_state_aevb_writes_passes_the_schema(finished_run):
    ckpt = find_checkpoint(finished_run)
    assert validate_state(read_state(ckpt), ckpt)["step"] == 30
    best = finished_run / "checkpoints" / "best"
    validate_state(read_state(best), best)
