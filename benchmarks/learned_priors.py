"""N(0, I) prior against a mixture of Gaussians and the VampPrior at one equal training budget, on
Larochelle & Murray's statically binarized MNIST (the published .amat(.gz) files), one stochastic layer.

Every row trains the same model (784-H-H-D tanh MLPs, Bernoulli decoder, ELBO with the Monte Carlo KL
on one sample, Adam, the same seed, epochs and batches) and differs only in ``model.prior``. Test
log p(x) is the IWAE bound L_K on the first ``--test-images`` test images (the same images for every
row), with its standard error over images; differences between rows are paired (same images), so
their standard errors are much smaller than either row's.

    nice -n 19 env OMP_NUM_THREADS=1 python benchmarks/learned_priors.py --out runs/priors   # docs/results.md's run
    python benchmarks/learned_priors.py --out runs/priors-long --epochs 100 --components 500 --k 5000
    python benchmarks/learned_priors.py --tiny --out /tmp/priors-smoke        # seconds, digits

Published (Tomczak & Welling 2018, one stochastic layer, K = 500 pseudo-inputs, long training with
KL warm-up): VampPrior 85.57 nats; N(0, I) rows of the same tables about 88.5-89.9. These runs are
far shorter.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _recipes import SHARED_DATA, evaluate_per_image, mean_se, threads_env, tiny_sections  # noqa: E402

PUBLISHED = {"vamp": "85.57", "standard_normal": "about 88.5-89.9"}
ROWS = ("standard_normal", "mog", "vamp")


def row_config(prior: str, args):
    from aevb.config import RunConfig, update

    cfg = RunConfig()
    update(cfg, {
        "data": {"name": "binarized-mnist", "data_dir": str(SHARED_DATA / "binarized_mnist")},
        "model": {"hidden": args.hidden, "latent_dim": args.latent_dim, "activation": "tanh", "prior": prior,
                  "prior_components": args.components, "prior_init": "data"},
        "objective": {"name": "elbo", "kl": "mc", "num_samples": 1},
        "train": {"epochs": args.epochs, "batch_size": 100, "lr": args.lr, "seed": args.seed, "quiet": True,
                  "tensorboard": False, "device": "cpu", "threads": 1},
        "out": str(Path(args.out) / prior)})
    if args.tiny:
        update(cfg, tiny_sections())
    return cfg






def table(results: dict) -> str:
    lines = ["| prior | train s | test -L_K (nats) | ± s.e. | test -ELBO | log p(x) gain over N(0, I) (+ is better) ± paired s.e. | published |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    base = results.get("standard_normal")
    for prior, r in results.items():
        nll, se = mean_se([-v for v in r["log_px"]])
        elbo, _ = mean_se([-v for v in r["elbo"]])
        gain = ""
        if base and prior != "standard_normal":
            d, dse = mean_se([a - b for a, b in zip(r["log_px"], base["log_px"])])
            gain = f"{d:+.2f} ± {dse:.2f}"
        pub = PUBLISHED.get(prior, "")
        lines.append(f"| {prior} | {r['train_seconds']:.0f} | {nll:.2f} | {se:.2f} | {elbo:.2f} | {gain} | {pub} |")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True)
    p.add_argument("--rows", default=",".join(ROWS))
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--hidden", default="200")
    p.add_argument("--latent-dim", type=int, default=40)
    p.add_argument("--components", type=int, default=100, help="K of mog and vamp (Tomczak & Welling: 500)")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--k", type=int, default=1000, help="importance samples (the literature: 5000)")
    p.add_argument("--test-images", type=int, default=10000)
    p.add_argument("--tiny", action="store_true", help="scikit-learn digits, 2 epochs, K=50: a smoke run")
    args = p.parse_args()
    threads_env(1)
    if args.tiny:
        args.epochs, args.k, args.components, args.hidden = 2, 50, 10, "32"
    from aevb.training.loop import train

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results_path = out / "results.json"
    results = json.loads(results_path.read_text()) if results_path.is_file() else {}
    for prior in args.rows.split(","):
        if prior in results:
            continue
        cfg = row_config(prior, args)
        done = Path(cfg.out) / "summary.json"
        if done.is_file():  # trained earlier (an interrupted evaluation): evaluate it as it is
            print(f"evaluating the finished run {cfg.out}", flush=True)
            run_dir, seconds = Path(cfg.out), float(json.loads(done.read_text())["train_seconds"])
        else:
            print(f"training {prior}: {cfg.out}", flush=True)
            run_dir = train(cfg)
            seconds = float(json.loads((Path(run_dir) / "summary.json").read_text())["train_seconds"])
        row = {"train_seconds": seconds, "epochs": args.epochs, "config": cfg.to_dict()}
        print(f"evaluating {prior}: L_{args.k} on {args.test_images} test images", flush=True)
        row.update(evaluate_per_image(run_dir, args.k, args.test_images))
        results[prior] = row
        results_path.write_text(json.dumps(results, indent=1) + "\n")
        print(table(results), flush=True)


if __name__ == "__main__":
    main()
