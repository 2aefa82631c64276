"""Poisson, NB and ZINB VAEs on counts drawn from a known ZINB latent-variable model, against the
true model's own test log-likelihood.

The generating model: z ~ N(0, I_2); for each of D features, eta = W2 tanh(W1 z + b1) + b2 (a fixed
random network, 16 hidden units), mu = exp(eta), theta_d fixed per feature in [0.5, 5], dropout
logits rho = V z + r (the zero inflation depends on z), x_d ~ ZINB(mu_d, theta_d, sigmoid(rho_d)).
Its exact log p(x) = log integral p(x|z) p(z) dz is computed by quadrature (z is two-dimensional:
a fine grid over the box where the integrand is within e^-40 of its peak), printed at two grid
steps to show it has converged.

Each VAE (2 latent dims, MLP 64-64, tanh, ELBO, Adam, the same seed, epochs and batches) is trained
with aevb's trainer; test log p(x) is the IWAE bound L_K (K = --k) on the test split, per example
in nats, with its standard error. The true model's value is an upper reference: a VAE of this
family can at best match it in expectation.

    nice -n 19 env OMP_NUM_THREADS=1 python benchmarks/count_likelihoods.py --out runs/counts
    python benchmarks/count_likelihoods.py --tiny --out /tmp/counts-smoke       # seconds
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np
import torch

ROWS = ("poisson", "nb", "zinb")


def true_model(num_dims: int, seed: int = 0) -> dict:
    """The generating ZINB model's parameters (float64 tensors)."""
    g = torch.Generator().manual_seed(seed)
    w1, b1 = torch.randn(16, 2, generator=g, dtype=torch.float64) * 1.2, torch.randn(16, generator=g, dtype=torch.float64) * 0.5
    w2 = torch.randn(num_dims, 16, generator=g, dtype=torch.float64) * 0.4
    b2 = torch.rand(num_dims, generator=g, dtype=torch.float64) * 2.5 - 0.5  # base means e^-0.5 .. e^2
    theta = 0.5 + 4.5 * torch.rand(num_dims, generator=g, dtype=torch.float64)
    v, r = torch.randn(num_dims, 2, generator=g, dtype=torch.float64) * 0.8, torch.randn(num_dims, generator=g,
                                                                                          dtype=torch.float64) - 1.0
    return {"w1": w1, "b1": b1, "w2": w2, "b2": b2, "log_theta": theta.log(), "v": v, "r": r}


def true_likelihood(m: dict, z: torch.Tensor):
    """p(x|z) of the generating model as aevb's ZINB distribution; z (..., 2)."""
    from aevb.models.count_likelihoods import CountDistribution

    eta = torch.tanh(z @ m["w1"].T + m["b1"]) @ m["w2"].T + m["b2"]
    return CountDistribution("zinb", eta, m["log_theta"].expand_as(eta), z @ m["v"].T + m["r"])


def sample_counts(m: dict, n: int, seed: int) -> np.ndarray:
    torch.manual_seed(seed)
    z = torch.randn(n, 2, dtype=torch.float64)
    return true_likelihood(m, z).sample().numpy().astype(np.int64)


def log_joint(m: dict, x: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
    """log p(x|z) + log N(z; 0, I) at the grid points z (G, 2)."""
    return true_likelihood(m, grid).log_prob(x) - 0.5 * grid.square().sum(-1) - math.log(2 * math.pi)


def square_grid(lo: torch.Tensor, hi: torch.Tensor, step: float) -> torch.Tensor:
    ticks = [torch.arange(float(a), float(b) + step / 2, step, dtype=torch.float64) for a, b in zip(lo, hi)]
    return torch.cartesian_prod(*ticks)


def true_log_px(m: dict, x: torch.Tensor, step: float, limit: float = 7.0, coarse: float = 0.2,
                window: float = 40.0) -> torch.Tensor:
    """log p(x) = log integral p(x|z) N(z; 0, I) dz by the midpoint rule with spacing ``step``, per example.

    A coarse grid (spacing ``coarse``) over [-limit, limit]^2 finds the box where log p(x, z) is
    within ``window`` nats of its largest value; the fine grid covers that box plus one coarse
    step on each side (outside it the integrand is below e^-40 of its peak).
    """
    coarse_grid = square_grid(torch.full((2,), -limit), torch.full((2,), limit), coarse)
    out = []
    for i in range(len(x)):
        values = log_joint(m, x[i], coarse_grid)
        near = coarse_grid[values > values.max() - window]
        lo = (near.min(0).values - coarse).clamp_min(-limit)
        hi = (near.max(0).values + coarse).clamp_max(limit)
        fine = square_grid(lo, hi, step)
        out.append(torch.logsumexp(log_joint(m, x[i], fine), 0) + 2 * math.log(step))
    return torch.stack(out)


def row_config(likelihood: str, data: Path, args):
    from aevb.config import RunConfig, update

    cfg = RunConfig()
    update(cfg, {
        "data": {"name": str(data), "valid_fraction": 0.1, "test_fraction": 0.1, "split_seed": 0},
        "model": {"likelihood": likelihood, "latent_dim": 2, "hidden": [64, 64], "activation": "tanh"},
        "objective": {"name": "elbo", "num_samples": 1},
        "train": {"epochs": args.epochs, "batch_size": 100, "lr": 1e-3, "seed": 0, "quiet": True,
                  "tensorboard": False, "device": "cpu", "threads": 1},
        "eval": {"k": 10},
        "out": str(Path(args.out) / likelihood)})
    return cfg


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True)
    p.add_argument("--examples", type=int, default=5000)
    p.add_argument("--dims", type=int, default=30)
    p.add_argument("--epochs", type=int, default=100)
    p.add_argument("--k", type=int, default=1000, help="importance samples per test example")
    p.add_argument("--tiny", action="store_true", help="a seconds-long smoke run")
    p.add_argument("--reuse", action="store_true", help="evaluate runs already trained under --out instead of training")
    args = p.parse_args()
    if args.tiny:
        args.examples, args.dims, args.epochs, args.k = 300, 8, 2, 20
    from aevb.data import build_datasets
    from aevb.inference.importance import importance_sample
    from aevb.training.checkpoint import load_run
    from aevb.training.loop import train

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    m = true_model(args.dims)
    data = out / "zinb_counts.csv"
    np.savetxt(data, sample_counts(m, args.examples, seed=1), fmt="%d", delimiter=",")
    rows = {}
    for likelihood in ROWS:
        start = time.time()
        cfg = row_config(likelihood, data, args)
        run_dir = Path(cfg.out) if args.reuse and (Path(cfg.out) / "summary.json").is_file() else train(cfg)
        cfg, model, info = load_run(run_dir)
        splits, _ = build_datasets(cfg.data, likelihood)
        stats = importance_sample(model, splits.test, k=args.k, seed=1234, progress=False)
        log_px = stats["log_px"]
        rows[likelihood] = {"log_px": float(log_px.mean()), "se": float(log_px.std() / math.sqrt(len(log_px))),
                            "elbo": float(stats["elbo"].mean()), "seconds": round(time.time() - start, 1),
                            "per_example": log_px}
    x_test = build_datasets(row_config("zinb", data, args).data, "zinb")[0].test.double()
    truth = {step: true_log_px(m, x_test, step) for step in (0.1, 0.05)}
    t = truth[0.05]
    print(f"data: {args.examples} examples x {args.dims} counts from the ZINB model; test n = {len(x_test)}; "
          f"mean count {float(x_test.mean()):.2f}, zeros {float((x_test == 0).double().mean()):.1%}")
    print(f"true model log p(x): {float(t.mean()):.3f} ± {float(t.std() / math.sqrt(len(t))):.3f} nats "
          f"(grid step 0.05; step 0.1 gives {float(truth[0.1].mean()):.3f})")
    summary = {"true": float(t.mean()), "true_se": float(t.std() / math.sqrt(len(t))), "rows": {}}
    for name, r in rows.items():
        gap = r["per_example"] - t
        print(f"{name:8s} VAE: test log p(x) {r['log_px']:.3f} ± {r['se']:.3f} (L_{args.k}), ELBO {r['elbo']:.3f}, "
              f"gap to the true model {float(gap.mean()):.3f} ± {float(gap.std() / math.sqrt(len(gap))):.3f} "
              f"(paired), {r['seconds']} s")
        summary["rows"][name] = {k: v for k, v in r.items() if k != "per_example"} | {
            "gap": float(gap.mean()), "gap_se": float(gap.std() / math.sqrt(len(gap)))}
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")


if __name__ == "__main__":
    main()
