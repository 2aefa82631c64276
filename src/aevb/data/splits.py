"""Turn a name or a path into seeded train / validation / test tensors and a DataInfo."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from aevb.data.bundled import RawDataset
from aevb.data.checks import check_counts, check_raw
from aevb.data.registry import DATASETS
from aevb.data.transforms import to_model_values, wants_counts


@dataclass
class DataInfo:
    """What the model and the reports need to know about the data.

    Attributes:
        name: data set name or path.
        shape: shape of one datum (e.g. (28, 28) or (3, 32, 32)); tensors are stored flat.
        num_dims: product of ``shape``.
        support: the values the model is fit to: "binary" (0/1) | "unit_interval" ([0, 1]) |
            "8bit" (integers 0..255) | "integer" (integers 0..levels-1) | "counts" (raw non-negative
            integers, count likelihoods) | "real".
        binarization: "dynamic" | "static" | "none".
        levels: distinct raw values per dimension for quantized data (256 for 8-bit), else None.
        sizes: {"train": N, "valid": N, "test": N}.
        split: how the split was made.
        source: where the data were found.
        dequantization: "uniform" when x = (x_int + u) / levels with u ~ U[0, 1)^D (one seeded
            draw), else "none". A density p(x) on [0, 1]^D then bounds the discrete probability:
            log P(x_int) >= log p(x) - D log(levels)  (in nats).
        label_names: class names for labels 0..C-1 when known (image class folders, CSV labels).
        feature_names: column names of a table (the CSV header without the label column), when known.
        standardization: {"mean": [D], "std": [D]} of the training split when data.standardize
            was applied (x_model = (x - mean) / std), else None.
        missing: "mask" when NaN entries are unobserved (data.missing = mask: every log-likelihood
            is that of the observed entries), else "error".
        missing_fraction: the fraction of entries that are NaN, over all splits (0 without a mask).
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
    dequantization: str = "none"
    label_names: list | None = None
    standardization: dict | None = None
    missing: str = "error"
    missing_fraction: float = 0.0
    feature_names: list | None = None

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "DataInfo":
        d = dict(d)
        d["shape"] = tuple(d["shape"])
        return cls(**{k: v for k, v in d.items() if k in {f.name for f in dataclasses.fields(cls)}})


@dataclass
class Splits:
    """Float32 tensors (N, num_dims) per split, with optional int64 labels (N,). A split may be
    empty (N = 0), e.g. Frey Face with valid_fraction = test_fraction = 0."""

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


def load_raw(data_cfg) -> RawDataset:
    """The named set ``data_cfg.name`` or the user's file/folder at that path, unsplit."""
    name = data_cfg.name
    if name in DATASETS:
        return DATASETS[name].load(data_cfg)
    path = Path(name).expanduser()
    if path.exists():
        from aevb.data.user import read_user_data

        return read_user_data(path, data_cfg)
    raise ValueError(f"unknown data set {name!r}: not a named data set ({', '.join(sorted(DATASETS))}) "
                     "and no such file or folder")


def _take(y, idx):
    return None if y is None else y[idx]


def split_raw(raw: RawDataset, data_cfg) -> tuple[dict, str]:
    """{"train"|"valid"|"test": (x (N, ...), y)} and a description of how they were made.

    Fixed splits the set prescribes are used as they are; otherwise a seeded permutation
    (``data_cfg.split_seed``) holds out round(test_fraction * N) for test, then
    round(valid_fraction * rest) for validation.
    """
    x, y = raw.x, raw.y
    protocol = getattr(data_cfg, "split", "")
    if not raw.fixed_splits and protocol not in ("", "random"):
        raise ValueError(f"data.split = {protocol!r}: {data_cfg.name} has no named split protocols; it is split at "
                         "random by data.valid_fraction and data.test_fraction (leave data.split empty)")
    parts: dict[str, tuple] = {}
    rng = np.random.default_rng(data_cfg.split_seed)
    if "test" in raw.fixed_splits:
        parts["test"] = raw.fixed_splits["test"]
        desc = raw.split_desc or "fixed test split"
    else:
        perm = rng.permutation(len(x))
        n_test = int(round(data_cfg.test_fraction * len(x)))
        parts["test"] = (x[perm[:n_test]], _take(y, perm[:n_test]))
        x, y = x[perm[n_test:]], _take(y, perm[n_test:])
        desc = f"seeded shuffle (seed {data_cfg.split_seed}): test {data_cfg.test_fraction:g}"
    if "valid" in raw.fixed_splits:
        parts["valid"] = raw.fixed_splits["valid"]
        parts["train"] = (x, y)
    else:
        perm = rng.permutation(len(x))
        n_valid = int(round(data_cfg.valid_fraction * len(x)))
        parts["valid"] = (x[perm[:n_valid]], _take(y, perm[:n_valid]))
        parts["train"] = (x[perm[n_valid:]], _take(y, perm[n_valid:]))
        desc += f", valid {data_cfg.valid_fraction:g} of the rest"
    if len(parts["train"][0]) == 0:
        raise ValueError(f"{data_cfg.name}: the training split is empty ({len(raw.x)} examples in all); "
                         "lower data.valid_fraction / data.test_fraction or add data")
    return parts, desc


def build_datasets(data_cfg, likelihood: str = "bernoulli") -> tuple[Splits, DataInfo]:
    """Load, check, split (seeded), scale and optionally binarize/dequantize the data in ``data_cfg``.

    Args:
        data_cfg: ``DataConfig``.
        likelihood: the model's likelihood name (decides ``binarize="auto"``, integer levels).

    Returns:
        (Splits, DataInfo); every split is float32 (N, num_dims).
    """
    raw = load_raw(data_cfg)
    check_raw(raw, data_cfg.name, getattr(data_cfg, "missing", "error"))
    if wants_counts(likelihood):
        for where, x in [(data_cfg.name, raw.x)] + [(f"{data_cfg.name} {s} split", v[0]) for s, v in raw.fixed_splits.items()]:
            check_counts(x, where)
    parts, split_desc = split_raw(raw, data_cfg)
    num_dims = int(np.prod(raw.shape))
    parts = {s: (np.asarray(x).reshape(len(x), num_dims), y) for s, (x, y) in parts.items()}
    values, meta = to_model_values(parts, raw, data_cfg, likelihood)
    labels = {s: None if y is None else torch.as_tensor(np.asarray(y), dtype=torch.int64) for s, (_, y) in parts.items()}
    splits = Splits(values["train"], values["valid"], values["test"],
                    labels["train"], labels["valid"], labels["test"])
    info = DataInfo(name=data_cfg.name, shape=tuple(raw.shape), num_dims=num_dims,
                    levels=raw.levels, sizes={s: int(values[s].shape[0]) for s in ("train", "valid", "test")},
                    split=split_desc, source=raw.source, label_names=raw.label_names,
                    feature_names=getattr(raw, "feature_names", None), **meta)
    return splits, info
