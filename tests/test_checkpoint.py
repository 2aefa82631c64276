"""Checkpoints: the whole state in safetensors + JSON, atomic, and an optimizer that continues exactly."""

import json

import pytest
import torch
from conftest import tiny_config

from aevb.config import TrainConfig
from aevb.training.checkpoint import (
    CheckpointError,
    find_checkpoint,
    flatten_optimizer_state,
    list_checkpoints,
    load_run,
    read_state,
    read_tensors,
    save_checkpoint,
    unflatten_optimizer_state,
)
from aevb.training.loop import train
from aevb.training.optim import build_optimizer


def _quadratic_steps(params, optimizer, num_steps, seed):
    g = torch.Generator().manual_seed(seed)
    for _ in range(num_steps):
        target = torch.randn(params[0].shape, generator=g)
        loss = (params[0] - target).pow(2).sum() + params[1].pow(2).sum()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()


@pytest.mark.parametrize("name", ["adam", "adagrad"])
def test_optimizer_state_through_safetensors_and_json_continues_exactly(tmp_path, name):
    cfg = TrainConfig(optimizer=name, lr=0.05)
    params = [torch.nn.Parameter(torch.ones(3, 2)), torch.nn.Parameter(torch.zeros(2))]
    opt = build_optimizer(params, cfg, torch.device("cpu"))
    _quadratic_steps(params, opt, 3, seed=0)
    tensors, meta = flatten_optimizer_state(opt.state_dict())
    tensors.update({"model.a": params[0].detach(), "model.b": params[1].detach()})
    save_checkpoint(tmp_path / "ck", tensors, {"optimizer": meta})
    assert sorted(p.name for p in (tmp_path / "ck").iterdir()) == ["state.json", "weights.safetensors"]

    loaded, state = read_tensors(tmp_path / "ck"), read_state(tmp_path / "ck")
    params2 = [torch.nn.Parameter(loaded["model.a"].clone()), torch.nn.Parameter(loaded["model.b"].clone())]
    opt2 = build_optimizer(params2, cfg, torch.device("cpu"))
    opt2.load_state_dict(unflatten_optimizer_state(loaded, state["optimizer"]))
    _quadratic_steps(params, opt, 4, seed=1)
    _quadratic_steps(params2, opt2, 4, seed=1)
    for p, q in zip(params, params2):
        assert torch.equal(p, q)


def test_checkpoint_holds_the_whole_training_state_without_pickle(tmp_path):
    run_dir = train(tiny_config(tmp_path, train={"epochs": 1, "checkpoint_every": 7}))
    ckpt = find_checkpoint(run_dir)
    tensors, state = read_tensors(ckpt), json.loads((ckpt / "state.json").read_text())
    assert {"rng.torch", "rng.noise"} <= set(tensors)
    assert any(k.startswith("optimizer.state.0.exp_avg") for k in tensors)
    for key in ("step", "epoch", "batch", "lr_scale", "best_valid", "sums", "optimizer", "schedule", "config",
                "version"):
        assert key in state, key
    assert state["config"]["train"]["checkpoint_every"] == 7
    assert state["step"] == 30 and state["epoch"] == 1 and state["batch"] == 0
    # step 28 and the final step 30 are kept (keep_checkpoints = 2), the others were removed
    assert [p.name for p in list_checkpoints(run_dir)] == ["step-00000028", "step-00000030"]
    assert (run_dir / "checkpoints" / "best" / "weights.safetensors").exists()
    for path in run_dir.rglob("*"):
        assert path.suffix not in (".pt", ".pth", ".pkl", ".bin"), path


def test_a_half_written_checkpoint_is_never_picked(tmp_path):
    save_checkpoint(tmp_path / "checkpoints" / "step-00000001", {"model.w": torch.ones(2)}, {"step": 1})
    broken = tmp_path / "checkpoints" / "step-00000002.tmp"  # a writer killed before the rename
    broken.mkdir()
    (broken / "state.json").write_text("{")
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step-00000001"]
    save_checkpoint(tmp_path / "checkpoints" / "step-00000001", {"model.w": torch.zeros(2)}, {"step": 1})
    assert torch.equal(read_tensors(find_checkpoint(tmp_path))["model.w"], torch.zeros(2))
    assert not (tmp_path / "checkpoints" / "step-00000001.old").exists()


def fake_run(tmp_path, steps=(1, 2), best=False):
    for step in steps:
        save_checkpoint(tmp_path / "checkpoints" / f"step-{step:08d}", {"model.w": torch.full((2,), float(step))},
                        {"step": step})
    if best:
        save_checkpoint(tmp_path / "checkpoints" / "best", {"model.w": torch.zeros(2)}, {"step": 0})
    return tmp_path


def test_which_accepts_last_best_and_step_n_only(tmp_path):
    run = fake_run(tmp_path, best=True)
    assert find_checkpoint(run, "last").name == "step-00000002"
    assert find_checkpoint(run, "best").name == "best"
    assert find_checkpoint(run, "step-1").name == "step-00000001"
    assert find_checkpoint(run, "step-00000002").name == "step-00000002"
    for bad in ("lats", "step-x", "bestest", ""):
        with pytest.raises(CheckpointError) as e:
            find_checkpoint(run, bad)
        message = str(e.value)
        assert f"unknown checkpoint {bad!r}" in message and "last, best or step-N" in message
        assert "step-00000001, step-00000002, best" in message  # the checkpoints present
    with pytest.raises(CheckpointError, match=r"checkpoints/step-7 has no weights.safetensors \(checkpoints present: step-00000001"):
        find_checkpoint(run, "step-7")


def test_which_best_without_a_best_checkpoint_says_so(tmp_path):
    run = fake_run(tmp_path)
    with pytest.raises(CheckpointError) as e:
        find_checkpoint(run, "best")
    assert "no best checkpoint" in str(e.value) and "validation" in str(e.value) and "--which last" in str(e.value)


def test_load_run_refuses_a_damaged_state_json(tmp_path):
    run_dir = train(tiny_config(tmp_path, train={"epochs": 1}))
    load_run(run_dir)  # intact: loads
    last = find_checkpoint(run_dir)
    (last / "state.json").write_text('{"step": 3, ')
    with pytest.raises(CheckpointError, match=f"cannot read {last / 'state.json'}"):
        load_run(run_dir)
    (last / "state.json").write_text("[1, 2]")
    with pytest.raises(CheckpointError, match="expected a JSON object"):
        load_run(run_dir)
