"""The rows a trained run is evaluated, scored or encoded on: a split of its data set, or every
row of a (possibly different) data set prepared with the run's data settings."""

from __future__ import annotations

import dataclasses

import numpy as np
import torch


def load_data(cfg, model, name: str | None, split: str, data_dir: str | None = None, run_info=None):
    """(x, labels, info) of ``split`` of the run's data set, or of the data set ``name`` (a named set or
    a path) prepared with the run's data settings; checked against the model's input size.

    ``split = "all"`` gives every row in input order (no shuffle, no split; see ``load_all_rows``).
    """
    from aevb.data import build_datasets

    changes = {k: v for k, v in (("name", name), ("data_dir", data_dir)) if v}
    data_cfg = dataclasses.replace(cfg.data, **changes)
    if split == "all":
        x, labels, info = load_all_rows(data_cfg, cfg.model.likelihood, run_info)
    else:
        splits, info = build_datasets(data_cfg, cfg.model.likelihood)
        x, labels = splits.get(split)
    expected = model.likelihood_module.num_dims
    if info.num_dims != expected:
        raise ValueError(f"{data_cfg.name}: examples have {info.num_dims} values (shape {info.shape}), but the "
                         f"model was trained on {expected}; give data of the training data's shape")
    if len(x) == 0:
        raise ValueError(f"{data_cfg.name}: the {split} split is empty; choose another --split")
    return x, labels, info


def load_all_rows(data_cfg, likelihood: str, run_info=None):
    """(x, labels, info): every row of ``data_cfg.name`` in input order, unshuffled and unsplit.

    The values are prepared as ``build_datasets`` prepares a split (scaling to [0, 1], static
    binarization or dequantization seeded by ``data_cfg.split_seed``); with ``data.standardize`` the
    *run's* training mean and std (``run_info.standardization``) are applied: x_model = (x - mean) / std.
    A named set with fixed splits gives its rows in the order main rows, then valid, then test.
    """
    from aevb.data import DataInfo, load_raw
    from aevb.data.checks import check_raw
    from aevb.data.transforms import to_model_values

    raw = load_raw(data_cfg)
    check_raw(raw, data_cfg.name, getattr(data_cfg, "missing", "error"))
    parts = [(raw.x, raw.y)] + [raw.fixed_splits[s] for s in ("valid", "test") if s in raw.fixed_splits]
    num_dims = int(np.prod(raw.shape))
    x = np.concatenate([np.asarray(p[0]).reshape(len(p[0]), num_dims) for p in parts])
    y = None if any(p[1] is None for p in parts) else np.concatenate([np.asarray(p[1]) for p in parts])
    empty = (x[:0], None)
    values, meta = to_model_values({"train": (x, y), "valid": empty, "test": empty}, raw,
                                   dataclasses.replace(data_cfg, standardize=False), likelihood)
    x_model = values["train"]
    stats = getattr(run_info, "standardization", None) if data_cfg.standardize else None
    if stats and len(stats["mean"]) == num_dims:
        x_model = (x_model - torch.tensor(stats["mean"])) / torch.tensor(stats["std"])
        meta["standardization"] = stats
    labels = None if y is None else torch.as_tensor(y, dtype=torch.int64)
    info = DataInfo(name=data_cfg.name, shape=tuple(raw.shape), num_dims=num_dims, levels=raw.levels,
                    sizes={"all": len(x)}, split="all rows in input order (no shuffle)", source=raw.source,
                    label_names=raw.label_names, **meta)
    return x_model, labels, info
