"""What a run's numbers measure, in words: which data kind log p(x) is a probability (or density) of,
what its bits/dim means, and which runs can be compared.

log p(x) of binarized images (a probability of 0/1 pixels), of 8-bit integers (a probability of
levels 0..255) and of values in [0, 1] or real values (a *density*, which can be positive and
changes with the units) are numbers about different data; they must not share a column unlabelled.
Two runs are comparable when they model the same data set, in the same kind and units: the same
``comparison_key``.
"""

from __future__ import annotations

DEQUANTIZE_HINT = ("integer-level (e.g. 8-bit) data under a continuous density: log p(x) is a density on [0, 1]^D, "
                   "not a probability, and has no bits/dim. Train with --dequantize uniform (data.dequantize) to get a bound on the "
                   "code length of the integers in bits/dim, comparable with categorical or discretized-logistic runs.")


def _get(info, key, default=None):
    return info.get(key, default) if isinstance(info, dict) else getattr(info, key, default)


def data_kind(info) -> str:
    """"binarized", "binary", "8bit", "8bit_dequantized", "integer", "unit_interval", "8bit_as_unit_interval", "real"."""
    binarization, support = _get(info, "binarization", "none"), _get(info, "support", "")
    levels, dequantization = _get(info, "levels"), _get(info, "dequantization", "none")
    if binarization in ("dynamic", "static"):
        return "binarized"
    if support == "binary":
        return "binary"
    if dequantization == "uniform":
        return "8bit_dequantized" if levels == 256 else "integer_dequantized"
    if support in ("8bit", "integer"):
        return support
    if support == "unit_interval":
        return "8bit_as_unit_interval" if levels else "unit_interval"
    return "real" if not _get(info, "standardization") else "real_standardized"


KIND_TEXT = {
    "binarized": ("log P(x) of binarized x (0/1 pixels drawn from the intensities)", "bits/dim (binarized data)"),
    "binary": ("log P(x) of binary x", "bits/dim (binary data)"),
    "8bit": ("log P(x) of 8-bit integers 0..255", "bits/dim (8-bit data)"),
    "integer": ("log P(x) of integer levels", "bits/dim (integer levels)"),
    "8bit_dequantized": ("log p of dequantized 8-bit x; bits/dim bounds the 8-bit code length",
                         "bits/dim (8-bit data, dequantized bound)"),
    "integer_dequantized": ("log p of dequantized integer levels; bits/dim bounds their code length",
                            "bits/dim (integer levels, dequantized bound)"),
    "8bit_as_unit_interval": ("log-density of integer-level (8-bit) x scaled to [0, 1] (a density, not a probability)",
                              "bits/dim"),
    "unit_interval": ("log-density of x in [0, 1] (a density, not a probability)", "n/a (a density)"),
    "real": ("log-density of real x in its own units (a density, not a probability)", "n/a (a density)"),
    "real_standardized": ("log-density of standardized x (a density, in standardized units)", "n/a (a density)"),
}


def describe_measure(info) -> dict:
    """{"kind", "what" (what log p(x) is), "bits_per_dim_label", "hint" (a suggestion, or "")}."""
    kind = data_kind(info)
    what, label = KIND_TEXT[kind]
    return {"kind": kind, "what": what, "bits_per_dim_label": label,
            "hint": DEQUANTIZE_HINT if kind == "8bit_as_unit_interval" else ""}


def comparison_key(info) -> tuple:
    """Runs with equal keys model the same data, in the same kind and units (so their log p(x) compare).

    Discrete 8-bit probabilities and dequantized 8-bit bounds share a key (both bound the 8-bit code
    length); binarized data compare only with binarized data; densities only with the same kind.
    """
    kind = data_kind(info)
    family = {"8bit_dequantized": "8bit", "integer_dequantized": "integer", "binary": "binarized"}.get(kind, kind)
    return (_get(info, "name", ""), family)


def protocol_text(binarization: str, seed=None, info=None) -> str:
    """The evaluation protocol in words (never "none binarization"); ``seed`` None leaves it out."""
    tail = f", seed {seed}" if seed is not None else ""
    if binarization == "dynamic":
        return f"dynamic binarization (a seeded Bernoulli draw per pixel){tail}"
    if binarization == "static":
        return f"static binarization (fixed when the data were built){tail}"
    kind = data_kind(info) if info is not None else ""
    what = {"8bit": "8-bit integers", "integer": "integer levels", "8bit_dequantized": "dequantized 8-bit values",
            "binary": "binary data", "8bit_as_unit_interval": "integer levels scaled to [0, 1]",
            "unit_interval": "values in [0, 1]", "real": "real values", "real_standardized": "standardized values"}
    return f"no binarization ({what.get(kind, 'values as stored')}){tail}"


def summarize_likelihood(desc: dict) -> str:
    """One line from ``Likelihood.describe()``: class, mean link and scale (a learned sigma's value)."""
    parts = [desc.get("class", "?")]
    if "mean" in desc:
        parts.append("mean = sigmoid(params)" if desc["mean"].startswith("sigmoid") else "mean = params")
    scale = desc.get("scale")
    if scale:
        mode = scale.get("mode")
        if mode == "fixed" or mode == "learned_shared":
            parts.append(f"sigma {mode} = {scale['value']:.4g}")
        elif mode == "learned_per_dim":
            parts.append(f"sigma learned_per_dim: mean {scale['mean']:.4g} (min {scale['min']:.4g}, max {scale['max']:.4g})")
        else:
            parts.append("sigma predicted by the decoder")
    return ", ".join(parts)
