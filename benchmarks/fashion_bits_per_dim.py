"""Bits/dim on 8-bit Fashion-MNIST at one equal small budget: the discretized logistic mixture, the
256-way categorical and a Gaussian on uniformly dequantized pixels.

Every row trains the same MLP VAE (784-H-Z-H-784*P, tanh, ELBO, Adam, the same seed, examples and
batches) on the first --train-images images of Fashion-MNIST's training set and differs only in the
likelihood (and so in P, the decoder outputs per pixel: 3K, 256 and 2 (mean, predicted log-variance)):

- ``discretized_logistic_mixture`` (K = --mixtures) and ``categorical`` give a probability of the
  integer levels: bits/dim = -log2 P(x) / 784;
- ``gaussian`` is a density on y = (x + u) / 256, u ~ U[0, 1)^784 (``data.dequantize = uniform``),
  scaled to [0, 1); log P(x) >= E_u log p(y) - 784 log 256, so bits/dim = -(log p(y) - 784 log 256)
  / (784 ln 2) is an upper bound on that model's code length (one draw of u per test image).

Test log p(x) is the IWAE bound L_K (K = --k) on the first --test-images test images (the same for
every row), with standard errors over images.

    nice -n 19 env OMP_NUM_THREADS=1 python benchmarks/fashion_bits_per_dim.py --out runs/fashion
    python benchmarks/fashion_bits_per_dim.py --tiny --out /tmp/fashion-smoke

Needs Debian's dataset-fashion-mnist (``apt-get install dataset-fashion-mnist``) or --data-dir.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np
import torch

ROWS = {"discretized_logistic_mixture": {}, "categorical": {},
        "gaussian": {"sigma": "predicted"}}


def write_subset(args, out: Path) -> tuple[Path, Path]:
    """The first --train-images training and --test-images test images as .npy (uint8, N x 28 x 28)."""
    from aevb.config import DataConfig
    from aevb.data import load_raw

    raw = load_raw(DataConfig(name="fashion-mnist", data_dir=args.data_dir, split="standard"))
    test = raw.fixed_splits["test"][0]
    train_path, test_path = out / "train.npy", out / "test.npy"
    np.save(train_path, np.asarray(raw.x[:args.train_images], dtype=np.uint8))
    np.save(test_path, np.asarray(test[:args.test_images], dtype=np.uint8))
    return train_path, test_path


def row_config(likelihood: str, train_path: Path, args):
    from aevb.config import RunConfig, update

    cfg = RunConfig()
    data = {"name": str(train_path), "valid_fraction": 0.0, "test_fraction": 0.0, "binarize": "none"}
    if likelihood == "gaussian":
        data["dequantize"] = "uniform"
    update(cfg, {
        "data": data,
        "model": {"likelihood": likelihood, "latent_dim": args.latent_dim, "hidden": [args.hidden],
                  "num_mixtures": args.mixtures, **ROWS[likelihood]},
        "objective": {"name": "elbo", "num_samples": 1},
        "train": {"epochs": args.epochs, "batch_size": 100, "lr": 1e-3, "seed": 0, "quiet": True,
                  "tensorboard": False, "device": "cpu", "threads": 1},
        "out": str(Path(args.out) / likelihood)})
    return cfg


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True)
    p.add_argument("--data-dir", default="")
    p.add_argument("--train-images", type=int, default=10000)
    p.add_argument("--test-images", type=int, default=500)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--latent-dim", type=int, default=20)
    p.add_argument("--mixtures", type=int, default=5)
    p.add_argument("--k", type=int, default=20, help="importance samples per test image")
    p.add_argument("--tiny", action="store_true", help="a seconds-long smoke run")
    args = p.parse_args()
    if args.tiny:
        args.train_images, args.test_images, args.epochs, args.hidden, args.k = 300, 20, 1, 16, 2
    import dataclasses

    from aevb.data.run_rows import load_all_rows
    from aevb.inference.evaluate import bits_per_dim
    from aevb.inference.importance import importance_sample
    from aevb.training.checkpoint import load_run
    from aevb.training.loop import train

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    train_path, test_path = write_subset(args, out)
    summary = {}
    for likelihood in ROWS:
        start = time.time()
        run_dir = train(row_config(likelihood, train_path, args))
        seconds = time.time() - start
        cfg, model, info = load_run(run_dir)
        x, _, test_info = load_all_rows(dataclasses.replace(cfg.data, name=str(test_path)), likelihood, info)
        stats = importance_sample(model, x, k=args.k, seed=1234, progress=False)
        per_image = torch.tensor([bits_per_dim(float(v), test_info, model.likelihood_module) for v in stats["log_px"]])
        row = {"bits_per_dim": float(per_image.mean()), "se": float(per_image.std() / math.sqrt(len(per_image))),
               "log_px": float(stats["log_px"].mean()), "train_seconds": round(seconds, 1),
               "params_per_dim": model.likelihood_module.params_per_dim}
        summary[likelihood] = row
        print(f"{likelihood:30s} bits/dim {row['bits_per_dim']:.4f} ± {row['se']:.4f}  "
              f"(log p(x) {row['log_px']:.1f} nats, L_{args.k}, {len(x)} test images; "
              f"P = {row['params_per_dim']}; trained {row['train_seconds']} s)", flush=True)
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")


if __name__ == "__main__":
    main()
