"""Metrics log: one JSON object per line in ``run_dir/metrics.jsonl`` (rank 0 writes).

Keys are ``split/metric`` (``train/elbo``, ``valid/elbo``, nats per example) plus ``step``,
``epoch``, ``examples``, ``examples_per_s``, ``time_s`` and ``lr``. When the ``tensorboard``
package is installed the same numbers also go to TensorBoard event files in
``run_dir/tensorboard`` (x axis: optimizer step).
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

COUNTERS = ("step", "epoch", "examples")


def _clean(v):
    if isinstance(v, float) and not math.isfinite(v):
        return str(v)
    return v


def _tensorboard_writer(folder: Path):
    """A SummaryWriter, or None when tensorboard is not installed."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        return None
    return SummaryWriter(log_dir=str(folder))


class MetricsLog:
    """Append-only JSON-lines log; keys are ``split/metric`` (``valid/elbo``) plus step counters."""

    def __init__(self, path: str | Path, enabled: bool = True, tensorboard: bool = False):
        self.path = Path(path)
        self.enabled = enabled
        self.writer = _tensorboard_writer(self.path.parent / "tensorboard") if (enabled and tensorboard) else None

    def write(self, record: dict) -> None:
        if not self.enabled:
            return
        with open(self.path, "a") as f:
            f.write(json.dumps({k: _clean(v) for k, v in record.items()}) + "\n")
            f.flush()
            os.fsync(f.fileno())
        if self.writer is not None:
            for key, value in record.items():
                if key not in COUNTERS and isinstance(value, (int, float)) and math.isfinite(value):
                    self.writer.add_scalar(key, value, global_step=record.get("step", 0))
            self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None


def read_metrics(path: str | Path) -> list[dict]:
    """All records of a metrics.jsonl file (a missing file gives an empty list)."""
    path = Path(path)
    if path.is_dir():
        path = path / "metrics.jsonl"
    if not path.exists():
        return []
    records = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if line.strip():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}, line {n}: not valid JSON ({e})") from None
    return records


def truncate_metrics(path: str | Path, step: int) -> None:
    """Keep only the records up to ``step`` (a resumed run rewrites what came after its checkpoint).

    A line cut short by a kill is dropped too.
    """
    path = Path(path)
    if not path.exists():
        return
    kept = []
    for line in path.read_text().splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if record.get("step", 0) <= step:
            kept.append(json.dumps(record))
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("".join(k + "\n" for k in kept))
    os.replace(tmp, path)
