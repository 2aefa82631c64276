"""Turn a RawDataset into seeded train / validation / test tensors and a DataInfo."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import numpy as np
import torch

from .bundled import DATASETS, RawDataset
from .transforms import binarize


@dataclass
class DataInfo:
    """What the model and the reports need to know about the data.

    Attributes:
        name: data set name or path.
        shape: shape of one datum (e.g. (28, 28)); tensors are stored flat.
        num_dims: product of ``shape``.
        support: "binary" | "unit_interval" | "8bit" | "real": the values the model is fit to.
        binarization: "dynamic" | "static" | "none".
        levels: distinct values per dimension for quantized data (256 for 8-bit), else None.
        sizes: {"train": N, "valid": N, "test": N}.
        split: how the split was made.
        source: where the data were found.
    """

    name: str
    shape: tuple
    num_dims: int
    support: str
    binarization: str
    levels: int | None = None
    sizes: dict = field(default_factory=dict)
    split: str = ""
    source: str = ""

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "DataInfo":
        d = dict(d)
        d["shape"] = tuple(d["shape"])
        return cls(**{k: v for k, v in d.items() if k in {f.name for f in dataclasses.fields(cls)}})


@dataclass
class Splits:
    """Float32 tensors (N, num_dims) per split, with optional int64 labels (N,)."""

    train: torch.Tensor
    valid: torch.Tensor
    test: torch.Tensor
    train_labels: torch.Tensor | None = None
    valid_labels: torch.Tensor | None = None
    test_labels: torch.Tensor | None = None

    def get(self, split: str) -> tuple[torch.Tensor, torch.Tensor | None]:
        if split not in ("train", "valid", "test"):
            raise ValueError(f"unknown split {split!r}; allowed: train, valid, test")
        return getattr(self, split), getattr(self, f"{split}_labels")


def _tensor(a: np.ndarray | None, dtype=torch.float32) -> torch.Tensor | None:
    return None if a is None else torch.as_tensor(np.ascontiguousarray(a), dtype=dtype)


def resolve_binarization(requested: str, raw: RawDataset, likelihood: str) -> str:
    """"auto" -> dynamic for [0,1]-scalable data under a bernoulli likelihood, else none."""
    if requested != "auto":
        if requested != "none" and raw.max_value is None:
            raise ValueError(f"binarize={requested!r} needs data with a known range (images); "
                             "this data set is real-valued: use --binarize none")
        return requested
    return "dynamic" if (likelihood == "bernoulli" and raw.max_value is not None) else "none"


def build_datasets(data_cfg, likelihood: str = "bernoulli") -> tuple[Splits, DataInfo]:
    """Load, split (seeded), scale and optionally binarize the data set named in ``data_cfg``.

    Args:
        data_cfg: ``DataConfig``.
        likelihood: the model's likelihood name (decides ``binarize="auto"``).

    Returns:
        (Splits, DataInfo).
    """
    name = data_cfg.name
    if name not in DATASETS:
        raise ValueError(f"unknown data set {name!r}; named data sets: {', '.join(sorted(DATASETS))} "
                         "(or give a path to a file or folder)")
    raw = DATASETS[name](data_cfg.data_dir)
    binarization = resolve_binarization(data_cfg.binarize, raw, likelihood)
    x = raw.x.reshape(len(raw.x), -1).astype(np.float32)
    y = raw.y
    parts: dict[str, tuple] = {}
    rng = np.random.default_rng(data_cfg.split_seed)
    if "test" in raw.fixed_splits:
        parts["test"] = raw.fixed_splits["test"]
        pool_x, pool_y = x, y
        split_desc = "fixed test split"
    else:
        perm = rng.permutation(len(x))
        n_test = int(round(data_cfg.test_fraction * len(x)))
        parts["test"] = (x[perm[:n_test]], None if y is None else y[perm[:n_test]])
        pool_x, pool_y = x[perm[n_test:]], None if y is None else y[perm[n_test:]]
        split_desc = f"seeded shuffle (seed {data_cfg.split_seed}): test {data_cfg.test_fraction:g}"
    if "valid" in raw.fixed_splits:
        parts["valid"] = raw.fixed_splits["valid"]
        parts["train"] = (pool_x, pool_y)
    else:
        perm = rng.permutation(len(pool_x))
        n_valid = int(round(data_cfg.valid_fraction * len(pool_x)))
        parts["valid"] = (pool_x[perm[:n_valid]], None if pool_y is None else pool_y[perm[:n_valid]])
        parts["train"] = (pool_x[perm[n_valid:]], None if pool_y is None else pool_y[perm[n_valid:]])
        split_desc += f", valid {data_cfg.valid_fraction:g} of the rest"

    tensors = {}
    for split, (sx, sy) in parts.items():
        t = _tensor(np.asarray(sx, dtype=np.float32).reshape(len(sx), -1))
        if raw.max_value is not None:
            t = t / raw.max_value
        tensors[split] = (t, _tensor(sy, torch.int64))
    if binarization == "static":
        g = torch.Generator().manual_seed(data_cfg.split_seed)
        tensors = {s: (binarize(t, g), lab) for s, (t, lab) in tensors.items()}
    support = "binary" if binarization != "none" else ("unit_interval" if raw.max_value is not None else "real")
    splits = Splits(tensors["train"][0], tensors["valid"][0], tensors["test"][0],
                    tensors["train"][1], tensors["valid"][1], tensors["test"][1])
    info = DataInfo(name=name, shape=tuple(raw.shape), num_dims=int(np.prod(raw.shape)), support=support,
                    binarization=binarization, levels=raw.levels,
                    sizes={s: int(tensors[s][0].shape[0]) for s in ("train", "valid", "test")},
                    split=split_desc, source=raw.source)
    return splits, info
