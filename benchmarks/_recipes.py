"""Shared helpers of the reproduction recipes (reproduce_aevb.py, reproduce_iwae.py).

Nothing here changes the library: it builds ``RunConfig`` objects from the shipped presets
plus the paper settings, and reads the run directories the trainer writes.
"""

from __future__ import annotations

import json
import math
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from aevb.config import RunConfig, read_preset, update  # noqa: E402
from aevb.training.metrics import read_metrics  # noqa: E402


def _find_shared_data() -> Path:
    """$AEVB_SHARED_DATA, else the first ``shared/data`` beside the checkout or one of its parents."""
    if os.environ.get("AEVB_SHARED_DATA"):
        return Path(os.environ["AEVB_SHARED_DATA"])
    return next((p / "shared" / "data" for p in ROOT.parents if (p / "shared" / "data").is_dir()),
                ROOT.parent / "shared" / "data")


SHARED_DATA = _find_shared_data()


def data_dir() -> str:
    """The folder holding the real data sets ($AEVB_SHARED_DATA, else ../shared/data); '' if absent."""
    return str(SHARED_DATA) if SHARED_DATA.is_dir() else ""


def config_from(preset: str, sections: dict) -> RunConfig:
    """RunConfig = defaults <- preset <- ``sections`` (a nested dict, e.g. {"train": {"lr": 0.01}})."""
    cfg = RunConfig()
    update(cfg, read_preset(preset), source=f"preset {preset}")
    update(cfg, sections, source="recipe")
    return cfg


TINY_NUM_TRAIN = 1_455  # scikit-learn digits: 1,797 images less the default 10% + 10% hold-outs


def tiny_sections(data_name: str = "digits") -> dict:
    """Overrides that turn any recipe into a seconds-long smoke run on scikit-learn's 8x8 digits."""
    return {"data": {"name": data_name, "split": "", "binarize": "auto", "data_dir": "",
                     "valid_fraction": 0.1, "test_fraction": 0.1},
            "train": {"quiet": True, "tensorboard": False, "device": "cpu"}}


def read_run(run_dir: str | Path) -> tuple[list[dict], dict | None]:
    """(metrics records, summary.json or None) of a run directory; records may still be growing."""
    run_dir = Path(run_dir)
    path = run_dir / "metrics.jsonl"
    records = read_metrics(path) if path.is_file() else []
    summary_path = run_dir / "summary.json"
    summary = json.loads(summary_path.read_text()) if summary_path.is_file() else None
    return records, summary


def curves(records: list[dict]) -> dict[str, tuple[list[float], list[float]]]:
    """{"train": (examples, elbo), "valid": (examples, elbo)} from metrics records (finite values only)."""
    out = {}
    for key in ("train", "valid"):
        pts = [(r["examples"], r[f"{key}/elbo"]) for r in records
               if f"{key}/elbo" in r and r[f"{key}/elbo"] is not None and math.isfinite(r[f"{key}/elbo"])]
        out[key] = ([p[0] for p in pts], [p[1] for p in pts])
    return out


def threads_env(threads: int) -> None:
    """One intra-op thread per process unless told otherwise (the machine is shared)."""
    os.environ.setdefault("OMP_NUM_THREADS", str(threads))


def evaluate_per_image(run_dir, k: int, num_images: int) -> dict:
    """L_k and the ELBO of each of the first ``num_images`` test images under a run's last checkpoint.

    The library's importance sampler (seed 1234, one worker): per-image lists in nats, so that two rows
    evaluated on the same images can be compared pairwise (``mean_se`` of the differences).
    """
    import time

    import torch

    from aevb.data import build_datasets
    from aevb.inference.importance import importance_sample
    from aevb.training.checkpoint import load_run

    cfg, model, info = load_run(run_dir)
    splits, _ = build_datasets(cfg.data, cfg.model.likelihood)
    x = splits.test[:num_images]
    start = time.time()
    out = importance_sample(model, x, k=k, seed=1234, binarization=info.binarization, progress=False, workers=1)
    return {"log_px": out["log_px"].tolist(), "elbo": out["elbo"].tolist(), "eval_seconds": time.time() - start,
            "k": k, "n": len(x), "torch_threads": torch.get_num_threads()}


def mean_se(values: list[float]) -> tuple[float, float]:
    """Mean and its standard error (sample standard deviation / sqrt(n)) of a list of numbers."""
    n = len(values)
    m = sum(values) / n
    var = sum((v - m) ** 2 for v in values) / max(1, n - 1)
    return m, math.sqrt(var / n)
