"""Diagonal Gaussian q(z|x) against full-covariance, planar-flow and IAF posteriors at one equal
training budget, on MNIST with the IWAE protocol (split ``iwae``: 59,600 training images, dynamic
binarization), one stochastic layer.

Every row trains the same model (784-H-D tanh MLPs, Bernoulli decoder, ELBO with the Monte Carlo KL on
one sample, Adam, the same seed, epochs and batches) and differs only in ``model.posterior`` (flows
with ``--flow-steps`` steps). Test log p(x) is the IWAE bound L_K on the first ``--test-images`` test
images (the same images and the same binarization for every row), with its standard error over
images; differences between rows are paired (same images), so their standard errors are much
smaller than either row's.

    nice -n 19 env OMP_NUM_THREADS=1 python benchmarks/posteriors.py --out runs/posteriors
    python benchmarks/posteriors.py --tiny --out /tmp/posteriors-smoke        # seconds, digits

Published (long training, larger models): Rezende & Mohamed (2015), planar flows with K = 80 on
binarized MNIST, -log p(x) <= 85.1 against 89.9 for the diagonal Gaussian (their table 2); Kingma et
al. (2016), IAF with a ResNet VAE, 79.10 nats. These runs are far shorter and smaller.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _recipes import SHARED_DATA, evaluate_per_image, mean_se, threads_env, tiny_sections  # noqa: E402

ROWS = ("gaussian", "full_covariance", "planar", "iaf")


def row_config(posterior: str, args):
    from aevb.config import RunConfig, update

    cfg = RunConfig()
    update(cfg, {
        "data": {"name": "mnist", "data_dir": str(SHARED_DATA / "mnist"), "split": "iwae", "binarize": "dynamic"},
        "model": {"hidden": args.hidden, "latent_dim": args.latent_dim, "activation": "tanh", "posterior": posterior,
                  "flow_steps": args.flow_steps, "flow_hidden": args.flow_hidden, "flow_context_dim": args.context_dim},
        "objective": {"name": "elbo", "kl": "mc", "num_samples": 1},
        "train": {"epochs": args.epochs, "batch_size": 100, "lr": args.lr, "seed": args.seed, "quiet": True,
                  "tensorboard": False, "device": "cpu", "threads": 1},
        "out": str(Path(args.out) / posterior)})
    if args.tiny:
        update(cfg, tiny_sections())
    return cfg






def table(results: dict) -> str:
    lines = ["| posterior | train s | test -L_K (nats) | ± s.e. | test -ELBO | log p(x) gain over gaussian (+ is better) ± paired s.e. |",
             "| --- | --- | --- | --- | --- | --- |"]
    base = results.get("gaussian")
    for posterior, r in results.items():
        nll, se = mean_se([-v for v in r["log_px"]])
        elbo, _ = mean_se([-v for v in r["elbo"]])
        gain = ""
        if base and posterior != "gaussian":
            d, dse = mean_se([a - b for a, b in zip(r["log_px"], base["log_px"])])
            gain = f"{d:+.2f} ± {dse:.2f}"
        lines.append(f"| {posterior} | {r['train_seconds']:.0f} | {nll:.2f} | {se:.2f} | {elbo:.2f} | {gain} |")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True)
    p.add_argument("--rows", default=",".join(ROWS))
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--hidden", default="200")
    p.add_argument("--latent-dim", type=int, default=20)
    p.add_argument("--flow-steps", type=int, default=4)
    p.add_argument("--flow-hidden", default="100")
    p.add_argument("--context-dim", type=int, default=20)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--k", type=int, default=5000)
    p.add_argument("--test-images", type=int, default=500)
    p.add_argument("--tiny", action="store_true", help="scikit-learn digits, 2 epochs, K=50: a smoke run")
    args = p.parse_args()
    threads_env(1)
    if args.tiny:
        args.epochs, args.k, args.hidden, args.latent_dim, args.flow_hidden = 2, 50, "32", 4, "16"
    from aevb.training.loop import train

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results_path = out / "results.json"
    results = json.loads(results_path.read_text()) if results_path.is_file() else {}
    for posterior in args.rows.split(","):
        if posterior in results:
            continue
        cfg = row_config(posterior, args)
        start = time.time()
        print(f"training {posterior}: {cfg.out}", flush=True)
        run_dir = train(cfg)
        row = {"train_seconds": time.time() - start, "epochs": args.epochs, "config": cfg.to_dict()}
        print(f"evaluating {posterior}: L_{args.k} on {args.test_images} test images", flush=True)
        row.update(evaluate_per_image(run_dir, args.k, args.test_images))
        results[posterior] = row
        results_path.write_text(json.dumps(results, indent=1) + "\n")
        print(table(results), flush=True)


if __name__ == "__main__":
    main()
