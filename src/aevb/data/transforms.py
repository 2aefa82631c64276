"""What the model sees: scaling to [0, 1], binarization, dequantization, standardization.

``to_model_values`` is applied once per split when the data are built; ``prepare_batch`` each
time a batch is drawn (dynamic binarization: a fresh Bernoulli draw per pixel per batch).
"""

from __future__ import annotations

import math

import numpy as np
import torch


def binarize(x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """One Bernoulli draw per pixel: x_bin ~ Bernoulli(x) for intensities x in [0, 1]."""
    return torch.bernoulli(x, generator=generator)


def dequantize(x_int: torch.Tensor, levels: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Uniform dequantization: x = (x_int + u) / levels, u ~ U[0, 1) per dimension, so x in [0, 1).

    References: Theis, van den Oord & Bethge (2016), "A note on the evaluation of generative models", sec. 3.1.
    """
    u = torch.rand(x_int.shape, generator=generator, dtype=x_int.dtype)
    return (x_int + u) / levels


def prepare_batch(x: torch.Tensor, binarization: str, generator: torch.Generator | None = None) -> torch.Tensor:
    """What the model sees: a fresh binarization for ``"dynamic"``, x itself otherwise."""
    if binarization == "dynamic":
        return binarize(x, generator)
    return x


def wants_integer_levels(likelihood: str) -> bool:
    """True when the likelihood class models integer levels (e.g. categorical over 0..255)."""
    from aevb.models.likelihoods import LIKELIHOODS

    return bool(getattr(LIKELIHOODS.get(likelihood), "wants_integer_levels", False))


def wants_counts(likelihood: str) -> bool:
    """True when the likelihood class models raw non-negative integer counts (poisson, nb, zinb)."""
    from aevb.models.likelihoods import LIKELIHOODS

    return bool(getattr(LIKELIHOODS.get(likelihood), "wants_counts", False))


def resolve_binarization(requested: str, raw, likelihood: str) -> str:
    """"auto" -> dynamic for [0,1]-scalable, non-binary data under a bernoulli likelihood, else none."""
    if requested == "auto":
        return "dynamic" if (likelihood == "bernoulli" and raw.max_value is not None and not raw.binary) else "none"
    if requested != "none" and raw.max_value is None:
        raise ValueError(f"data.binarize = {requested!r} needs data with a known range such as images; "
                         f"{raw.source or 'this data'} is real-valued: use --binarize none")
    return requested


def to_model_values(parts: dict, raw, data_cfg, likelihood: str) -> tuple[dict, dict]:
    """Scale each split's (N, D) array into the tensor the model is trained on.

    Order: raw counts kept (poisson, nb, zinb) | integer levels kept (categorical-type likelihoods) | uniform dequantization
    (x_int + u) / levels | scale x / max_value into [0, 1]; then static binarization (one draw
    seeded by ``split_seed``) or standardization ((x - mean_train) / std_train, real data only).

    With ``data.missing = mask`` NaN entries (unobserved) stay NaN through every step.

    Returns:
        ({split: float32 tensor (N, D)}, {"support", "binarization", "dequantization", "standardization",
        "missing", "missing_fraction"}).
    """
    binarization = resolve_binarization(data_cfg.binarize, raw, likelihood)
    dequant = getattr(data_cfg, "dequantize", "none")
    standardize = getattr(data_cfg, "standardize", False)
    integer = wants_integer_levels(likelihood) and binarization == "none"
    if integer and raw.levels is None:
        raise ValueError(f"likelihood {likelihood} models integer levels but {data_cfg.name} holds values that are not "
                         "integers (no known number of levels); choose a continuous likelihood (gaussian, laplace, "
                         "continuous_bernoulli for [0,1]) or quantize the data to integers 0..255 first")
    if dequant == "uniform" and (raw.levels is None or binarization != "none" or raw.binary or integer):
        raise ValueError("data.dequantize = 'uniform' is for continuous likelihoods on integer-level data "
                         f"(8-bit images) without binarization; {data_cfg.name} has levels={raw.levels}, "
                         f"binarization={binarization}, likelihood={likelihood}: use --set data.dequantize=none")
    if standardize and raw.max_value is not None:
        raise ValueError(f"data.standardize is for real-valued data; {data_cfg.name} has a known range "
                         f"[0, {raw.max_value:g}] and is scaled to [0, 1] instead: drop data.standardize")
    missing = getattr(data_cfg, "missing", "error")
    if missing == "mask" and binarization == "dynamic":
        raise ValueError("data.missing = mask cannot be combined with dynamic binarization (a fresh draw per batch "
                         "would fill the missing entries); use --binarize static or none, or a likelihood for [0, 1] "
                         "values (continuous_bernoulli)")
    counts = wants_counts(likelihood)
    if counts and (binarization != "none" or dequant != "none" or standardize):
        raise ValueError(f"likelihood {likelihood} models the raw counts; drop data.binarize ({binarization}), "
                         f"data.dequantize ({dequant}) and data.standardize ({standardize}) for it")
    g = torch.Generator().manual_seed(data_cfg.split_seed)
    out = {}
    for split in ("train", "valid", "test"):
        t = torch.as_tensor(np.ascontiguousarray(parts[split][0], dtype=np.float32))
        if integer or counts:
            pass
        elif dequant == "uniform":
            t = dequantize(t, raw.levels, g)
        elif raw.max_value is not None:
            t = t / raw.max_value
        if binarization == "static":
            t = torch.where(torch.isnan(t), t, binarize(torch.nan_to_num(t, nan=0.0), g))  # NaN stays missing
        out[split] = t
    standardization = None
    if standardize:
        mean = out["train"].nanmean(0)  # over the observed entries (NaN = missing under data.missing = mask)
        n = (~torch.isnan(out["train"])).sum(0).clamp_min(2)
        std = ((out["train"] - mean).square().nansum(0) / (n - 1)).sqrt()
        std = torch.where(std > 0, std, torch.ones_like(std))
        out = {s: (t - mean) / std for s, t in out.items()}
        standardization = {"mean": mean.tolist(), "std": std.tolist()}
    if counts:
        support = "counts"
    elif integer:
        support = "8bit" if raw.levels == 256 else "integer"
    elif binarization != "none" or raw.binary:
        support = "binary"
    elif dequant == "uniform" or raw.max_value is not None:
        support = "unit_interval"
    else:
        support = "real"
    num_entries = sum(t.numel() for t in out.values())
    missing_fraction = sum(count_nan(t) for t in out.values()) / max(1, num_entries)
    return out, {"support": support, "binarization": binarization, "dequantization": dequant,
                 "standardization": standardization, "missing": missing, "missing_fraction": missing_fraction}


def count_nan(t: torch.Tensor) -> int:
    """The number of NaN entries of t: 0 when the sum of t is not NaN (a NaN entry makes it NaN, and an
    overflow gives inf, not NaN; one pass, no (N, D) mask), else counted entry by entry."""
    if not math.isnan(float(t.sum())):
        return 0
    return int(torch.isnan(t).sum())


def from_model_values(x: torch.Tensor, raw, info) -> torch.Tensor:
    """The inverse of ``to_model_values`` for values the model produced (e.g. imputations): undo the
    standardization (x * std + mean), then the scaling to [0, 1] (x * max_value, or x * levels for
    uniformly dequantized data); counts and integer levels are returned as they are."""
    stats = getattr(info, "standardization", None)
    if stats:
        x = x * torch.tensor(stats["std"], dtype=x.dtype) + torch.tensor(stats["mean"], dtype=x.dtype)
    if info.support in ("counts", "8bit", "integer"):
        return x
    if getattr(info, "dequantization", "none") == "uniform" and raw.levels:
        return x * raw.levels
    if raw.max_value is not None:
        return x * raw.max_value
    return x
