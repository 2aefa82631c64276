"""Which likelihood and which KL weight a hand-written VAE loss implies (``aevb explain``).

The loss per example is taken to be

    loss = c * sum_d l(x_d, m_d) + w * KL(q(z|x) || p(z)),   c = 1 (reduction "sum") or 1/D ("mean"),

with l the elementwise loss (squared error, binary cross-entropy on probabilities m, absolute
error), m the decoder output and the KL summed over latent dimensions. For a multiplier k > 0,

    k * loss + constant = -[log p(x|z) - beta * KL],

the negative of a beta-weighted ELBO term in nats, with the likelihood, scale, constant and beta
returned by :func:`explain_loss`. Multiplying a loss by k > 0 does not move its minimiser, so all
k describe the same training objective; two readings are reported: k = 1 (the number as printed)
and, for mse/l1, the k that makes beta = 1 (an exact ELBO). The math is in docs/likelihoods.md.
"""

from __future__ import annotations

import math

LOSSES = ("mse", "bce", "l1", "poisson_nll", "nb_nll", "zinb_nll")
# losses whose likelihood has no free scale: the reading is k = 1/c (beta = k w), like bce
SCALE_FREE = ("bce", "poisson_nll", "nb_nll", "zinb_nll")
LIKELIHOOD_OF = {"mse": "gaussian", "bce": "bernoulli", "l1": "laplace", "poisson_nll": "poisson", "nb_nll": "nb",
                 "zinb_nll": "zinb"}
REDUCTIONS = ("sum", "mean")


def _gaussian(c: float, k: float, dims: int) -> tuple[float, float]:
    """(sigma, constant) with k*c*SSE = SSE / (2 sigma^2): sigma^2 = 1/(2kc), constant D/2 log(2 pi sigma^2)."""
    var = 1.0 / (2.0 * k * c)
    return math.sqrt(var), dims / 2 * math.log(2 * math.pi * var)


def _laplace(c: float, k: float, dims: int) -> tuple[float, float]:
    """(b, constant) with k*c*L1 = L1 / b: b = 1/(kc), constant D log(2b)."""
    b = 1.0 / (k * c)
    return b, dims * math.log(2 * b)


def _reading(loss: str, c: float, k: float, beta: float, dims: int) -> dict:
    """The likelihood parameters for one multiplier k (beta = k w, passed exactly by the caller)."""
    if loss == "poisson_nll":  # torch's PoissonNLLLoss (full=False) leaves out sum_d log x_d!, which depends on x
        scale, constant = None, None
    elif loss in SCALE_FREE:
        scale, constant = None, 0.0
    else:
        scale, constant = (_gaussian if loss == "mse" else _laplace)(c, k, dims)
    return {"multiplier": k, "scale": scale, "constant_nats": constant, "beta": beta,
            "is_elbo": beta == 1.0, "is_bound": beta >= 1.0,
            "constant_text": "sum_d log(x_d!) (depends on x only: 0 for x in {0, 1})" if constant is None else
            f"{constant:.6g} nats"}


def explain_loss(loss: str, reduction: str, dims: int, kl_weight: float = 1.0) -> dict:
    """The likelihood, scale, left-out constant and KL weight implied by ``loss``.

    Args:
        loss: "mse" (squared error), "bce" (binary cross-entropy), "l1" (absolute error), or a count
            loss: "poisson_nll" (``torch.nn.PoissonNLLLoss`` with log_input=True, full=False:
            exp(m) - x m per entry), "nb_nll" / "zinb_nll" (the full negative log-PMF of a negative
            binomial / zero-inflated NB per entry, as scVI and DCA write them).
        reduction: "sum" or "mean" over the D data dimensions of one example.
        dims: D, data dimensions per example.
        kl_weight: w, the weight of the per-example KL term in the loss.

    Returns:
        dict with ``likelihood``, ``scale_name`` ("sigma", "b" or None), the reading at k = 1
        (``multiplier``, ``scale``, ``constant_nats``, ``beta``, ``is_elbo``, ``is_bound``: whether
        -(k * loss + constant) is a lower bound on log p(x) under that likelihood), ``exact_elbo``
        (the reading with beta = 1 for mse/l1 when w > 0, else None), ``as_sum`` (mse/l1 with
        reduction "mean": the reading k = D, which has the scale of reduction "sum" and beta = D w),
        ``note`` and ``derivation`` (lines of text). For bce the reading is k = 1/c (a Bernoulli
        has no free scale), and likewise for the count losses; for poisson_nll ``constant_nats`` is
        None (the left-out constant sum_d log x_d! depends on the data; ``constant_text`` says so).
        "Bound" means in expectation over z ~ q(z|x), as for any ELBO.
    """
    if loss not in LOSSES:
        raise ValueError(f"unknown loss {loss!r}; allowed: {', '.join(LOSSES)}")
    if reduction not in REDUCTIONS:
        raise ValueError(f"unknown reduction {reduction!r}; allowed: {', '.join(REDUCTIONS)}")
    if not (isinstance(dims, int) and dims >= 1):
        raise ValueError(f"dims must be a positive integer (data dimensions per example), got {dims!r}")
    if not (math.isfinite(kl_weight) and kl_weight >= 0):
        raise ValueError(f"kl weight must be a finite number >= 0, got {kl_weight!r}")
    c = 1.0 if reduction == "sum" else 1.0 / dims
    w = float(kl_weight)
    k = float(dims) if (loss in SCALE_FREE and reduction == "mean") else 1.0
    out = {"loss": loss, "reduction": reduction, "dims": dims, "kl_weight": w, "c": c,
           "likelihood": LIKELIHOOD_OF[loss], "scale_name": {"mse": "sigma", "l1": "b"}.get(loss)}
    out.update(_reading(loss, c, k, k * w, dims))
    scaled = loss not in SCALE_FREE
    out["exact_elbo"] = _reading(loss, c, 1.0 / w, 1.0, dims) if (scaled and w > 0) else None
    out["as_sum"] = _reading(loss, c, float(dims), dims * w, dims) if (scaled and dims > 1 and
                                                                       reduction == "mean") else None
    out["note"] = NOTES[loss]
    out["derivation"] = derivation(out)
    return out


NOTES = {
    "mse": "exact for real-valued x under a Gaussian with the sigma shown; sigma is fixed by the loss, not learned",
    "bce": "exact for binary x (Bernoulli, no constant left out); for grayscale x in [0,1] it is not a "
           "log-likelihood: the continuous Bernoulli log-normaliser sum_d log C(lambda_d) >= D log 2 is missing "
           "(use --likelihood continuous_bernoulli)",
    "l1": "exact for real-valued x under a Laplace with the scale b shown",
    "poisson_nll": "exact for non-negative integer counts x under a Poisson with log-rate m, up to sum_d log x_d! "
                   "(constant in the model; PoissonNLLLoss(full=True) adds Stirling's approximation of it); "
                   "train it with --likelihood poisson",
    "nb_nll": "exact for counts under a negative binomial (mean m, inverse dispersion theta): --likelihood nb",
    "zinb_nll": "exact for counts under a zero-inflated negative binomial: --likelihood zinb (scVI's default)",
}

COUNT_PMFS = {
    "poisson_nll": ("exp(m_d) - x_d m_d", "-log Poisson(x_d; e^m_d) = e^m_d - x_d m_d + log x_d!"),
    "nb_nll": ("-log NB(x_d; mu_d, theta_d)", "the negative binomial log-PMF, constants included"),
    "zinb_nll": ("-log ZINB(x_d; mu_d, theta_d, pi_d)", "the zero-inflated NB log-PMF, constants included"),
}


def derivation(r: dict) -> list[str]:
    """A few lines of algebra from the loss to the ELBO, with the numbers filled in."""
    D, c, w, loss = r["dims"], r["c"], r["kl_weight"], r["loss"]
    red = "sum_d" if r["reduction"] == "sum" else f"(1/{D}) sum_d"
    if loss in COUNT_PMFS:
        term, pmf = COUNT_PMFS[loss]
        k, beta = r["multiplier"], r["beta"]
        return [
            f"loss = {red} [{term}] + {w:g} KL, so {k:g} * loss = sum_d [{term}] + {beta:g} KL",
            f"{pmf}, summed over d: the count likelihood's -log p(x|z)",
            f"so {k:g} * loss + {r['constant_text']} = -[log p(x|z) - beta KL] with beta = {beta:g}"
            + (" (an exact negative ELBO)" if r["is_elbo"] else " (not an ELBO: beta != 1)"),
        ] + ([] if r["is_elbo"] else [f"the likelihood has no free scale: an exact ELBO needs KL weight w = 1/{k:g} "
                                      f"= {1 / k:.6g} with this reduction"])
    if loss == "bce":
        return [
            f"loss = {red} BCE(x_d, p_d) + {w:g} KL, so {r['multiplier']:g} * loss = sum_d BCE + {r['beta']:g} KL",
            "sum_d BCE(x_d, p_d) = -sum_d [x_d log p_d + (1 - x_d) log(1 - p_d)] = -log Bernoulli(x; p) for x in {0,1}",
            f"so {r['multiplier']:g} * loss = -[log p(x|z) - beta KL] with beta = {r['beta']:g}"
            + (" (an exact negative ELBO)" if r["is_elbo"] else " (not an ELBO: beta != 1)"),
            "for x in [0,1]: log CB(x; p) = -sum_d BCE(x_d, p_d) + sum_d log C(p_d), the last sum is left out",
        ]
    name, s = ("sigma", r["scale"]) if loss == "mse" else ("b", r["scale"])
    lines = [f"loss = {c:g} * sum_d {'(x_d - m_d)^2' if loss == 'mse' else '|x_d - m_d|'} + {w:g} KL   (c = {c:g})"]
    if loss == "mse":
        lines += ["-log N(x; m, sigma^2 I) = sum_d (x_d - m_d)^2 / (2 sigma^2) + D/2 log(2 pi sigma^2)",
                  f"match 1/(2 sigma^2) = k c: for k = 1, sigma^2 = 1/(2c) = {s * s:g}, sigma = {s:.6g}",
                  f"constant left out: D/2 log(2 pi sigma^2) = {r['constant_nats']:.6g} nats"]
    else:
        lines += ["-log Laplace(x; m, b) = sum_d |x_d - m_d| / b + D log(2b)",
                  f"match 1/b = k c: for k = 1, b = 1/c = {s:g}",
                  f"constant left out: D log(2b) = {r['constant_nats']:.6g} nats"]
    lines.append(f"so loss + {r['constant_nats']:.6g} = -[log p(x|z) - beta KL] with beta = w = {r['beta']:g}"
                 + (" (an exact negative ELBO)" if r["is_elbo"] else " (not an ELBO: beta != 1)"))
    m = r["as_sum"]
    if m is not None:
        lines.append(f"equivalently, k = D = {m['multiplier']:g}: {name} = {m['scale']:.6g} as for reduction 'sum', "
                     f"and beta = D w = {m['beta']:g}")
    e = r["exact_elbo"]
    if e is not None and not r["is_elbo"]:
        lines.append(f"any k > 0 has the same minimiser; k = 1/w = {e['multiplier']:g} gives beta = 1: "
                     f"an exact ELBO with {name} = {e['scale']:.6g} (constant {e['constant_nats']:.6g} nats)")
    return lines


def format_explanation(r: dict) -> str:
    """Human-readable text of :func:`explain_loss`'s result."""
    scale = "" if r["scale"] is None else f", {r['scale_name']} = {r['scale']:.6g}"
    bound = ("yes, an exact ELBO" if r["is_elbo"] else
             "yes, a looser lower bound (beta > 1)" if r["is_bound"] else "no (beta < 1: not a bound)")
    lines = [
        f"loss: {r['loss']} with reduction '{r['reduction']}' over D = {r['dims']} dims, KL weight {r['kl_weight']:g}",
        f"likelihood: {r['likelihood']}{scale}",
        f"constant left out: {r['constant_text']} per example",
        f"effective beta (KL weight relative to log p(x|z)): {r['beta']:g}",
        f"-({r['multiplier']:g} * loss + constant) is (in expectation over q) a lower bound on log p(x): {bound}",
    ]
    m = r["as_sum"]
    if m is not None:
        lines.append(f"equivalently (loss x {m['multiplier']:g}): {r['scale_name']} = {m['scale']:.6g} "
                     f"with beta = {m['beta']:g}")
    e = r["exact_elbo"]
    if e is not None and not r["is_elbo"]:
        lines.append(f"same minimiser as an exact ELBO with {r['scale_name']} = {e['scale']:.6g} "
                     f"(loss x {e['multiplier']:g})")
    lines.append(f"note: {r['note']}")
    lines.append("derivation:")
    lines += [f"  {line}" for line in r["derivation"]]
    return "\n".join(lines)
