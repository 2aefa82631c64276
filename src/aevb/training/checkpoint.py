"""Checkpoints: ``run_dir/checkpoints/step-{step:08d}/`` (and ``checkpoints/best/``) holding
``weights.safetensors`` and ``state.json``. No pickle anywhere.

One checkpoint is the whole training state: ``weights.safetensors`` holds every tensor (model
weights under ``model.*``, optimizer moments under ``optimizer.state.<param>.<name>``, RNG states
under ``rng.*``) and ``state.json`` the rest (step, epoch, position in the epoch, optimizer
hyper-parameters, schedule state, metrics, resolved config, package version).

Writes are atomic: files go to a temporary folder that is fsync'd and renamed into place.
``load_run`` rebuilds a model from a run directory for evaluation, plotting and export.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from aevb.config import RunConfig


class CheckpointError(RuntimeError):
    """A run directory or checkpoint is missing or unreadable; the message says which file."""


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The plain module inside DDP and torch.compile wrappers."""
    while True:
        if hasattr(model, "module"):
            model = model.module
        elif hasattr(model, "_orig_mod"):
            model = model._orig_mod
        else:
            return model


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def normal_file_mode(path: Path) -> None:
    """Give a file the mode ``open()`` would (0666 minus the umask, 0644 usually): safetensors writes 0600."""
    mask = os.umask(0)
    os.umask(mask)
    os.chmod(path, 0o666 & ~mask)


def write_json_atomic(path: Path, obj: dict) -> None:
    """Write ``obj`` as JSON to ``path`` through ``path.tmp`` + rename; the temporary file never stays behind."""
    tmp = path.with_name(path.name + ".tmp")
    try:
        with open(tmp, "w") as f:
            json.dump(obj, f, indent=2)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def describe_write_error(e: BaseException) -> str:
    """A short reason for a failed write: "no space left on device" for ENOSPC (OSError or safetensors)."""
    if getattr(e, "errno", None) == errno.ENOSPC or "os error 28" in str(e) or "No space left" in str(e):
        return "no space left on device"
    if getattr(e, "errno", None) == errno.EDQUOT:
        return "disk quota exceeded"
    return getattr(e, "strerror", None) or str(e).splitlines()[0][:200]


def save_checkpoint(ckpt_dir: str | Path, tensors: dict[str, torch.Tensor], state: dict) -> Path:
    """Atomically write ``weights.safetensors`` (tensors) and ``state.json`` (JSON state) to ckpt_dir.

    Both files go to ``<ckpt_dir>.tmp`` first, are fsync'd, and the folder is renamed into place; an
    existing ``ckpt_dir`` is moved to ``<ckpt_dir>.old`` for the instant between the two renames.

    Raises:
        CheckpointError: the files could not be written (disk full, quota, permissions). The
            temporary folder is removed and every earlier checkpoint is left as it was.
    """
    ckpt_dir = Path(ckpt_dir)
    tmp = ckpt_dir.with_name(ckpt_dir.name + ".tmp")
    try:
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir(parents=True)
        save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, str(tmp / "weights.safetensors"))
        normal_file_mode(tmp / "weights.safetensors")
        with open(tmp / "state.json", "w") as f:
            json.dump(state, f, indent=2)
            f.flush()
            os.fsync(f.fileno())
        fd = os.open(tmp / "weights.safetensors", os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except (OSError, SafetensorError) as e:
        shutil.rmtree(tmp, ignore_errors=True)
        raise CheckpointError(f"cannot write checkpoint {ckpt_dir}: {describe_write_error(e)}") from None
    old = ckpt_dir.with_name(ckpt_dir.name + ".old")
    if ckpt_dir.exists():
        if old.exists():
            shutil.rmtree(old)
        os.replace(ckpt_dir, old)
    os.replace(tmp, ckpt_dir)
    if old.exists():
        shutil.rmtree(old)
    _fsync_dir(ckpt_dir.parent)
    return ckpt_dir


def flatten_optimizer_state(state_dict: dict) -> tuple[dict[str, torch.Tensor], dict]:
    """Split ``optimizer.state_dict()`` into safetensors tensors and a JSON-able rest.

    Returns:
        (tensors, meta): tensors under ``optimizer.state.<param index>.<name>``; meta holds
        ``param_groups`` and the non-tensor per-parameter values.
    """
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict = {}
    for index, values in state_dict["state"].items():
        for name, value in values.items():
            if torch.is_tensor(value):
                tensors[f"optimizer.state.{index}.{name}"] = value
            else:
                scalars.setdefault(str(index), {})[name] = value
    groups = [{k: (list(v) if isinstance(v, tuple) else v) for k, v in g.items()} for g in state_dict["param_groups"]]
    return tensors, {"param_groups": groups, "scalars": scalars}


def unflatten_optimizer_state(tensors: dict[str, torch.Tensor], meta: dict) -> dict:
    """Inverse of ``flatten_optimizer_state``: a dict for ``optimizer.load_state_dict``."""
    state: dict[int, dict] = {}
    for key, value in tensors.items():
        if key.startswith("optimizer.state."):
            index, name = key[len("optimizer.state."):].split(".", 1)
            state.setdefault(int(index), {})[name] = value
    for index, values in meta.get("scalars", {}).items():
        state.setdefault(int(index), {}).update(values)
    groups = [{k: (tuple(v) if k == "betas" else v) for k, v in g.items()} for g in meta["param_groups"]]
    return {"state": state, "param_groups": groups}


def list_checkpoints(run_dir: str | Path) -> list[Path]:
    """Complete ``step-*`` checkpoints of a run, oldest first."""
    root = Path(run_dir) / "checkpoints"
    if not root.is_dir():
        return []
    found = [p for p in root.glob("step-*") if p.is_dir() and not p.name.endswith((".tmp", ".old"))
             and (p / "weights.safetensors").exists() and (p / "state.json").exists()]
    return sorted(found, key=lambda p: int(p.name.split("-")[1]))


def find_checkpoint(run_dir: str | Path, which: str = "last") -> Path:
    """The checkpoint folder ``which`` ("last", "best" or "step-N") of a run directory.

    Raises CheckpointError for any other name, a missing ``best`` (no validation split) or step.
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise CheckpointError(f"run directory {run_dir} does not exist")
    found = list_checkpoints(run_dir)
    present = ", ".join([p.name for p in found] + (["best"] if (run_dir / "checkpoints" / "best" /
                                                                "weights.safetensors").exists() else [])) or "none"
    valid_step = which.startswith("step-") and which[len("step-"):].isdigit()
    if which not in ("last", "best") and not valid_step:
        raise CheckpointError(f"unknown checkpoint {which!r}: use last, best or step-N "
                              f"(checkpoints in {run_dir}: {present})")
    if which == "best":
        p = run_dir / "checkpoints" / "best"
        if not (p / "weights.safetensors").exists():
            raise CheckpointError(f"{run_dir} has no best checkpoint ({p}; was there no validation split?); "
                                  f"use --which last (checkpoints present: {present})")
        return p
    if valid_step:
        step = int(which[len("step-"):])
        p = next((c for c in found if int(c.name.split("-")[1]) == step), run_dir / "checkpoints" / which)
        if not (p / "weights.safetensors").exists():
            raise CheckpointError(f"{p} has no weights.safetensors (checkpoints present: {present})")
        return p
    if not found:
        raise CheckpointError(f"{run_dir} has no checkpoint (expected {run_dir}/checkpoints/step-*/weights.safetensors)")
    return found[-1]


def read_state(ckpt_dir: str | Path) -> dict:
    path = Path(ckpt_dir) / "state.json"
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise CheckpointError(f"cannot read {path}: {e}") from None


def read_tensors(ckpt_dir: str | Path) -> dict[str, torch.Tensor]:
    path = Path(ckpt_dir) / "weights.safetensors"
    try:
        return load_file(str(path))
    except Exception as e:  # safetensors raises several types for damaged files
        raise CheckpointError(f"cannot read {path}: {e} (the file is damaged or not a safetensors file)") from None


def load_run(run_dir: str | Path, which: str = "last", device: str | torch.device = "cpu"):
    """Rebuild a trained model from a run directory.

    Returns:
        (cfg, model, info): the resolved ``RunConfig``, the ``VAE`` in eval mode with the
        checkpoint's weights, and the ``DataInfo`` recorded at training time.
    """
    from aevb.data import DataInfo
    from aevb.models.vae import build_model

    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise CheckpointError(f"run directory {run_dir} does not exist")
    for name in ("config.json", "data.json"):
        if not (run_dir / name).exists():
            raise CheckpointError(f"{run_dir} is not an aevb run directory: {name} is missing")
    cfg = RunConfig.load(run_dir / "config.json")
    try:
        info = DataInfo.from_dict(json.loads((run_dir / "data.json").read_text()))
    except (json.JSONDecodeError, TypeError, KeyError) as e:
        raise CheckpointError(f"cannot read {run_dir / 'data.json'}: {e}") from None
    model = build_model(cfg.model, info)
    ckpt = find_checkpoint(run_dir, which)
    state = read_state(ckpt)
    if not isinstance(state, dict):
        raise CheckpointError(f"cannot read {ckpt / 'state.json'}: expected a JSON object, found {type(state).__name__}")
    tensors = read_tensors(ckpt)
    weights = {k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")}
    try:
        model.load_state_dict(weights)
    except RuntimeError as e:
        raise CheckpointError(f"{ckpt}: weights do not fit the configured model: {e}") from None
    return cfg, model.to(device).eval(), info
