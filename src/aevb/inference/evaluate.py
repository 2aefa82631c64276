"""Evaluation of a whole split: ELBO, log p(x) by the IWAE bound L_K, bits/dim, active units,
per-example scores and latents. All values per example, in nats.

The sampling (encode once, decode K samples in memory-bounded blocks, streaming log-sum-exp, the
documented seeding) lives in ``importance.py``; this module summarises it. See docs/evaluation.md.

References: Burda, Grosse & Salakhutdinov (2016), Importance Weighted Autoencoders, eq. 8 and
section 5.2; Kingma & Welling (2014), Auto-Encoding Variational Bayes, eq. 7.
"""

from __future__ import annotations

import math

import torch

from aevb.inference.importance import SigmoidMLP, choose_chunks, importance_sample, prepare_data
from aevb.models.base import MC_SAMPLES

__all__ = ["evaluate", "score_examples", "encode", "encode_layers", "evaluate_elbo", "bits_per_dim", "count_active_units",
           "importance_sample", "choose_chunks", "prepare_data", "SigmoidMLP"]

ACTIVE_UNIT_THRESHOLD = 0.01  # Burda et al. (2016), section 5.2


def mean_and_se(v: torch.Tensor) -> tuple[float, float]:
    """Mean over examples and its standard error std(ddof=1) / sqrt(n)."""
    n = v.numel()
    return float(v.mean()), float(v.std() / math.sqrt(n)) if n > 1 else 0.0


def count_active_units(mu: torch.Tensor, threshold: float = ACTIVE_UNIT_THRESHOLD) -> int:
    """Latent dims whose posterior mean varies over the data: #{d : Var_x(E_q[z_d]) > threshold}.

    The variance is over examples (ddof=0). References: Burda et al. (2016), section 5.2.
    """
    return int((mu.double().var(0, unbiased=False) > threshold).sum())


def bits_per_dim(log_px: float, info, likelihood, num_dims: float | None = None) -> float | None:
    """-log2 P(x) / D for discrete data, in bits per dimension; None where it is not meaningful.

    Discrete likelihood (``likelihood.discrete``): -log_px / (D ln 2). Continuous density on
    uniformly dequantized data with ``levels`` values per dim scaled to [0, 1]: the probability
    of the 8-bit cell is p(x) / levels^D, so bits/dim = -(log_px - D log levels) / (D ln 2).
    ``num_dims`` replaces D (e.g. the mean number of observed entries under data.missing = mask).
    """
    num_dims = num_dims or info.num_dims  # with missing entries: the mean number of observed entries
    if getattr(likelihood, "discrete", False):
        return -log_px / (num_dims * math.log(2))
    levels = getattr(info, "levels", None)
    dequantization = getattr(info, "dequantization", None) or getattr(info, "dequantize", "none")
    if dequantization == "uniform" and levels:
        return -(log_px - num_dims * math.log(levels)) / (num_dims * math.log(2))
    return None


def observed_entries(x: torch.Tensor, info) -> float | None:
    """Mean number of observed (non-NaN) entries per example under data.missing = mask, else None."""
    if getattr(info, "missing", "error") != "mask":
        return None
    return float((~torch.isnan(x)).sum()) / max(1, len(x))


def observed_note(observed: float, num_dims: int) -> str:
    """What the numbers of a run with missing entries are (every report shows it)."""
    return (f"log-likelihood of the observed entries only, log p(x_obs) (data.missing = mask; "
            f"{observed:.1f} of {num_dims} entries observed per example on average)")


def evaluate(model, x: torch.Tensor, info, *, k: int = 5000, seed: int = 1234, memory_mb: int = 512,
             labels: torch.Tensor | None = None, progress: bool = True, split: str = "test",
             workers: int | None = None) -> dict:
    """The whole evaluation of x (N, num_dims): ELBO, log p(x) by L_K, bits/dim, active units.

    Args:
        model: a ``VAE`` (on any device).
        x: (N, num_dims) data as stored by ``build_datasets`` (intensities when binarization is dynamic).
        info: the ``DataInfo`` of the data (binarization, num_dims, levels).
        k: K, importance samples per example (5000: Burda et al.'s protocol).
        seed: seeds binarization and sampling; the same seed gives the same numbers.
        memory_mb: memory budget of one block of work.
        labels: optional (N,) labels; adds "by_label": {label: {"n", "log_px", "elbo"}}.
        progress: show a progress bar.
        split: the split's name, recorded in the result.
        workers: parallel threads over chunks (None: torch's thread count on the CPU); no effect on the numbers.

    Returns:
        {"n", "elbo", "elbo_se", "recon", "kl", "log_px", "log_px_se", "k", "bits_per_dim",
        "active_units", "latent_dim", "split", "binarization", "seed", "data"}: means over examples in
        nats per example (``*_se`` = standard errors), bits_per_dim None for continuous data.
    """
    conditional = getattr(model, "conditional", False)
    stats = importance_sample(model, x, k=k, seed=seed, memory_mb=memory_mb, binarization=info.binarization,
                              progress=progress, workers=workers, labels=labels if conditional else None)
    elbo, elbo_se = mean_and_se(stats["elbo"])
    log_px, log_px_se = mean_and_se(stats["log_px"])
    observed = observed_entries(x, info)
    dims = list(getattr(model, "latent_dims", [stats["mu"].shape[1]]))
    per_layer = [count_active_units(mu) for mu in stats["mu"].split(dims, dim=1)]
    result = {"n": len(x), "elbo": elbo, "elbo_se": elbo_se, "recon": float(stats["recon"].mean()),
              "kl": float(stats["kl"].mean()), "log_px": log_px, "log_px_se": log_px_se, "k": k,
              "bits_per_dim": bits_per_dim(log_px, info, model.likelihood_module, observed),
              "active_units": sum(per_layer), "latent_dim": int(stats["mu"].shape[1]),
              **({"active_units_per_layer": per_layer, "latent_dims": dims} if len(dims) > 1 else {}),
              "split": split, "binarization": info.binarization, "seed": seed, "data": getattr(info, "name", "")}
    if observed is not None:
        result["observed"] = observed_note(observed, info.num_dims)
    if conditional:
        result["conditional"] = "every number is of log p(x|y), given the example's label y"
    if labels is not None:
        result["by_label"] = {}
        for label in torch.unique(labels).tolist():
            mask = labels.cpu() == label
            result["by_label"][str(label)] = {"n": int(mask.sum()), "log_px": float(stats["log_px"][mask].mean()),
                                              "elbo": float(stats["elbo"][mask].mean())}
    return result


def score_examples(model, x: torch.Tensor, *, binarization: str = "none", k: int = 5000, seed: int = 1234,
                   memory_mb: int = 512, progress: bool = True, workers: int | None = None,
                   labels: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-example (log p(x) estimate L_K, ELBO), each (N,) float64 in nats, in the order of x.

    Lower scores mean more unusual examples (anomaly detection). A conditional model needs the
    labels (N,) and scores log p(x|y).
    """
    stats = importance_sample(model, x, k=k, seed=seed, memory_mb=memory_mb, binarization=binarization,
                              progress=progress, workers=workers, labels=labels)
    return stats["log_px"], stats["elbo"]


@torch.no_grad()
def encode_layers(model, x: torch.Tensor, *, batch_size: int = 1000, num_samples: int = MC_SAMPLES,
                  seed: int = 1234, labels: torch.Tensor | None = None) -> tuple[list[tuple[torch.Tensor, torch.Tensor]],
                                                                                  list[str]]:
    """Per layer, the mean and log-variance of the marginal q(z_l|x) for x (N, num_dims) as given
    (no binarization); of q(z|x,y) for a conditional model, which needs the labels (N,).

    Closed forms where the layer's family has them (layer 1 of a Gaussian posterior), otherwise
    ``num_samples`` Monte Carlo draws per example from a generator seeded with ``seed``
    (``model.posterior_moments``).

    Returns:
        ([(mu_l, log_var_l), ...] each (N, D_l) float32 on the CPU, [how each layer was computed]).
    """
    device = next(model.parameters()).device
    generator = torch.Generator(device=device).manual_seed(seed)
    dims = list(getattr(model, "latent_dims", [model.latent_dim]))
    step = max(1, min(batch_size, 2**24 // max(1, num_samples * sum(dims))))  # MC draws stay within ~64 MB
    parts: list[list] = [[] for _ in dims]
    hows = ["closed form"] * len(dims)
    for i in range(0, len(x), step):
        m = model.given(_labels_for(model, labels, len(x))[i:i + step]) if getattr(model, "conditional", False) \
            else model
        moments = m.posterior_moments(x[i:i + step].to(device), num_samples, generator)
        for layer, (mean, var, how) in enumerate(moments):
            parts[layer].append((mean.float().cpu(), var.log().float().cpu()))
            hows[layer] = how
    layers = [(torch.cat([m for m, _ in p]), torch.cat([v for _, v in p])) if p else
              (torch.zeros(0, d), torch.zeros(0, d)) for p, d in zip(parts, dims)]
    return layers, hows


def encode(model, x: torch.Tensor, *, batch_size: int = 1000,
           labels: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and log-variance of q(z_1|x) (of q(z|x,y) for a conditional model, given the labels (N,))
    for x (N, num_dims) as given (no binarization); see ``encode_layers``.

    Returns:
        (mu, log_var), each (N, D_1) float32 on the CPU.
    """
    return encode_layers(model, x, batch_size=batch_size, labels=labels)[0][0]


def _labels_for(model, labels: torch.Tensor | None, n: int) -> torch.Tensor:
    if labels is None or len(labels) != n:
        raise ValueError(f"a conditional model needs one label per example ({n}), got "
                         f"{'none' if labels is None else len(labels)}")
    return labels


def evaluate_elbo(model, x: torch.Tensor, *, binarization: str = "none", batch_size: int = 1000,
                  seed: int = 1234, num_samples: int = 1, labels: torch.Tensor | None = None) -> dict:
    """Mean ELBO (analytic KL) over x with its standard error and its two terms, in nats per example.

    E_q[log p(x|z)] is estimated with ``num_samples`` draws per example; ``batch_size`` caps the
    examples per chunk. The same seed gives the same numbers (see the module docstring).

    Returns:
        {"n", "elbo", "elbo_se", "recon", "kl"}; ``elbo_se`` = std / sqrt(n).
    """
    if len(x) == 0:
        return {"n": 0, "elbo": math.nan, "elbo_se": math.nan, "recon": math.nan, "kl": math.nan}
    stats = importance_sample(model, x, k=num_samples, seed=seed, binarization=binarization, progress=False,
                              max_examples=batch_size, labels=labels)
    elbo, elbo_se = mean_and_se(stats["elbo"])
    return {"n": len(x), "elbo": elbo, "elbo_se": elbo_se, "recon": float(stats["recon"].mean()),
            "kl": float(stats["kl"].mean())}
