"""The training state: what a checkpoint holds and what the NaN guard rolls back to.

``capture_state`` turns a ``TrainState`` into (tensors, meta) — tensors for safetensors, meta for
JSON — and ``restore_state`` puts them back in place. Checkpoints on disk and the guard's
in-memory snapshots are the same pair, so a rollback and a resume restore exactly the same things:
model weights, optimizer moments, the step, the epoch and the position in it, the schedule's
state (``lr_scale``), the running sums of the epoch's metrics, the best validation bound, and the
random generators (torch's global generator and the trainer's noise generator, whose stream
gives every binarization draw and every z noise draw).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import torch

from aevb import __version__
from aevb.training.checkpoint import (
    CheckpointError,
    flatten_optimizer_state,
    unflatten_optimizer_state,
)

# Counters and schedule state saved to JSON under these names.
COUNTERS = ("step", "epoch", "batch", "lr_scale", "nan_retries", "best_valid", "best_step",
            "stale_validations", "sums", "seconds")


@dataclass
class TrainState:
    """Everything that changes while training.

    Attributes:
        model: the plain VAE (never a DDP or compiled wrapper).
        optimizer: its optimizer.
        noise: generator of the binarization and z noise draws (the same stream on every rank).
        step: optimizer steps taken.
        epoch: completed epochs (the current epoch is ``epoch + 1`` in 1-based messages).
        batch: batches done in the current epoch (the position in its permutation).
        lr_scale: factor on the scheduled learning rate (0.1 per NaN rollback).
        nan_retries: rollbacks since the last checkpoint.
        best_valid: best validation ELBO so far, nats per example (-inf before any).
        best_step: step of that validation.
        stale_validations: validations since the best one (early stopping counts these).
        sums: [sum of bound, sum of recon, sum of KL, examples] over the current epoch, all ranks.
        seconds: training time so far, summed over resumed sessions.
    """

    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    noise: torch.Generator
    step: int = 0
    epoch: int = 0
    batch: int = 0
    lr_scale: float = 1.0
    nan_retries: int = 0
    best_valid: float = -math.inf
    best_step: int = -1
    stale_validations: int = 0
    sums: list = field(default_factory=lambda: [0.0, 0.0, 0.0, 0.0])
    seconds: float = 0.0
    stopped: str = ""
    data_fingerprint: object = ""  # of the prepared data: its text, or a data.fingerprint.BackgroundFingerprint
    # whose str() is the text; saved, never restored


def _json_float(v: float):
    return v if math.isfinite(v) else str(v)


def capture_state(ts: TrainState, cfg) -> tuple[dict[str, torch.Tensor], dict]:
    """(tensors, meta) describing ``ts`` completely; tensors are the live ones (clone to keep)."""
    tensors = {f"model.{k}": v for k, v in ts.model.state_dict().items()}
    opt_tensors, opt_meta = flatten_optimizer_state(ts.optimizer.state_dict())
    tensors.update(opt_tensors)
    tensors["rng.torch"] = torch.get_rng_state()
    tensors["rng.noise"] = ts.noise.get_state()
    meta = {name: getattr(ts, name) for name in COUNTERS}
    meta["best_valid"] = _json_float(ts.best_valid)
    meta["sums"] = list(ts.sums)
    meta.update({"optimizer": opt_meta, "schedule": {"name": cfg.train.schedule, "lr_scale": ts.lr_scale},
                 "noise_device": str(ts.noise.device), "version": __version__, "config": cfg.to_dict(),
                 "data_fingerprint": str(ts.data_fingerprint)})
    return tensors, meta


def restore_state(ts: TrainState, tensors: dict[str, torch.Tensor], meta: dict, copy: bool = False) -> None:
    """Put (tensors, meta) from ``capture_state`` back into ``ts`` in place.

    Args:
        copy: clone the optimizer tensors first (needed when the pair is a snapshot that must
            survive further optimizer steps: ``load_state_dict`` may keep the given tensors).
    """
    weights = {k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")}
    ts.model.load_state_dict(weights)
    opt = {k: (v.clone() if copy else v) for k, v in tensors.items() if k.startswith("optimizer.")}
    ts.optimizer.load_state_dict(unflatten_optimizer_state(opt, meta["optimizer"]))
    torch.set_rng_state(tensors["rng.torch"])
    ts.noise.set_state(tensors["rng.noise"])
    for name in COUNTERS:
        setattr(ts, name, meta[name])
    ts.best_valid = float(meta["best_valid"])
    ts.sums = list(meta["sums"])


def snapshot_state(ts: TrainState, cfg) -> tuple[dict[str, torch.Tensor], dict]:
    """An in-memory copy of the state (the NaN guard's last good state)."""
    tensors, meta = capture_state(ts, cfg)
    return {k: v.detach().clone() for k, v in tensors.items()}, meta


def all_finite(tensors: dict[str, torch.Tensor]) -> bool:
    """True when every floating-point tensor is free of NaN and inf."""
    return all(bool(torch.isfinite(v).all()) for v in tensors.values() if v.is_floating_point())


# state.json schema: key -> (check, what is expected). Checked before anything of the file is used.
def _int_at_least(low: int):
    return lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= low


def _number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


STATE_SCHEMA = {
    "step": (_int_at_least(0), "an integer >= 0"),
    "epoch": (_int_at_least(0), "an integer >= 0"),
    "batch": (_int_at_least(0), "an integer >= 0"),
    "nan_retries": (_int_at_least(0), "an integer >= 0"),
    "stale_validations": (_int_at_least(0), "an integer >= 0"),
    "best_step": (_int_at_least(-1), "an integer >= -1"),
    "lr_scale": (lambda v: _number(v) and math.isfinite(v) and v > 0, "a finite number > 0"),
    "best_valid": (lambda v: (_number(v) and not math.isnan(v)) or v in ("-inf", "inf"), "a number or \"-inf\""),
    "sums": (lambda v: isinstance(v, list) and len(v) == 4 and all(_number(a) for a in v) and v[3] >= 0,
             "a list of 4 numbers (bound, recon, KL, examples >= 0)"),
    "seconds": (lambda v: _number(v) and v >= 0, "a number >= 0"),
    "optimizer": (lambda v: isinstance(v, dict) and isinstance(v.get("param_groups"), list)
                  and all(isinstance(g, dict) for g in v["param_groups"]) and isinstance(v.get("scalars", {}), dict),
                  "an object with a param_groups list"),
    "config": (lambda v: isinstance(v, dict), "an object (the resolved config)"),
}


def _excerpt(v) -> str:
    text = repr(v)
    return text if len(text) <= 40 else text[:37] + "..."


def validate_state(meta, ckpt_dir: str | Path) -> dict:
    """Check a checkpoint's state.json against ``STATE_SCHEMA`` and its folder name; return it.

    Raises:
        CheckpointError: not a JSON object, a key missing or of the wrong type or range, or a step
            that differs from the ``step-N`` folder it is in; the message lists every problem.
    """
    path = Path(ckpt_dir) / "state.json"
    if not isinstance(meta, dict):
        kind = {list: "a JSON list", str: "a JSON string", int: "a number", float: "a number"}.get(type(meta), "null")
        raise CheckpointError(f"{path} holds {kind}, expected a JSON object with {', '.join(STATE_SCHEMA)} "
                              "(the training state aevb writes); the file was replaced or damaged")
    problems = [f"{key} is missing" if key not in meta else f"{key} is {_excerpt(meta[key])} (expected {expected})"
                for key, (ok, expected) in STATE_SCHEMA.items() if key not in meta or not ok(meta[key])]
    name = Path(ckpt_dir).name
    if not problems and name.startswith("step-") and name[5:].isdigit() and int(name[5:]) != meta["step"]:
        problems.append(f"step is {meta['step']} but the folder is {name}")
    if problems:
        raise CheckpointError(f"{path} is not a valid training state: {'; '.join(problems)}. The file was edited or "
                              f"damaged; restore it, or delete {Path(ckpt_dir).name}/ to resume from the checkpoint "
                              "before it")
    return meta
