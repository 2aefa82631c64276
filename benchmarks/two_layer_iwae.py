"""One against two stochastic layers, VAE (k=1) and IWAE (k=5), at one equal budget on MNIST with
the IWAE protocol (presets ``iwae-mnist`` and ``iwae-mnist-2layer``: dynamic binarization, split
``iwae``, batch 20, Adam eps 1e-4, the 3^i schedule cut to ``--epochs`` passes).

Every row trains with the same seed and number of passes; test log p(x) is the IWAE bound L_K on
the first ``--test-images`` test images (the same images and the same seeded binarization for every
row), with its standard error over images and, against the one-layer row of the same objective, a
paired difference (+: the two-layer model is better).

    nice -n 19 env OMP_NUM_THREADS=1 python benchmarks/two_layer_iwae.py --epochs 1 --out runs/layers
    python benchmarks/two_layer_iwae.py --tiny --out /tmp/layers-smoke        # seconds, digits

Published (Burda et al. 2016, table 1, MNIST, 3,280 passes): one layer VAE k=1 -86.76, IWAE k=5
-85.54; two layers VAE k=1 -85.33, IWAE k=5 -83.89 nats.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _recipes import SHARED_DATA, evaluate_per_image, mean_se, threads_env, tiny_sections  # noqa: E402

PUBLISHED = {"1layer-vae": "-86.76", "1layer-iwae5": "-85.54", "2layer-vae": "-85.33", "2layer-iwae5": "-83.89"}
ROWS = tuple(PUBLISHED)


def row_config(row: str, args):
    from aevb.config import RunConfig, read_preset, update

    layers, objective = row.split("-")
    cfg = RunConfig()
    update(cfg, read_preset("iwae-mnist-2layer" if layers == "2layer" else "iwae-mnist"))
    update(cfg, {"data": {"data_dir": str(SHARED_DATA / "mnist")},
                 "objective": {"name": "elbo", "num_samples": 1} if objective == "vae" else
                 {"name": "iwae", "num_samples": 5},
                 "train": {"epochs": args.epochs, "seed": args.seed, "quiet": True, "tensorboard": False,
                           "device": "cpu", "threads": 1, "eval_every": 0},
                 "out": str(Path(args.out) / row)})
    if args.tiny:
        update(cfg, tiny_sections())
        update(cfg, {"model": {"hidden": [32], "latent_dim": 4, "stochastic_hidden": [16]}})
        if layers == "2layer":
            update(cfg, {"model": {"latent_dims": [6, 3]}})
    return cfg






def table(results: dict) -> str:
    lines = ["| model | passes | train s | test L_K (nats) | ± s.e. | test ELBO | two layers - one layer ± paired s.e. | published L_5000 |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for row, r in results.items():
        log_px, se = mean_se(r["log_px"])
        elbo, _ = mean_se(r["elbo"])
        gain = ""
        base = results.get(row.replace("2layer", "1layer"))
        if row.startswith("2layer") and base:
            d, dse = mean_se([a - b for a, b in zip(r["log_px"], base["log_px"])])
            gain = f"{d:+.2f} ± {dse:.2f}"
        lines.append(f"| {row} | {r['epochs']} | {r['train_seconds']:.0f} | {log_px:.2f} | {se:.2f} | {elbo:.2f} | "
                     f"{gain} | {PUBLISHED[row]} |")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True)
    p.add_argument("--rows", default=",".join(ROWS))
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--k", type=int, default=5000)
    p.add_argument("--test-images", type=int, default=1000)
    p.add_argument("--tiny", action="store_true", help="scikit-learn digits, 1 pass, K=50: a smoke run")
    args = p.parse_args()
    threads_env(1)
    if args.tiny:
        args.epochs, args.k, args.test_images = 1, 50, 100
    from aevb.training.loop import train

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results_path = out / "results.json"
    results = json.loads(results_path.read_text()) if results_path.is_file() else {}
    for row in args.rows.split(","):
        if row in results:
            continue
        cfg = row_config(row, args)
        start = time.time()
        print(f"training {row}: {cfg.out}", flush=True)
        run_dir = train(cfg)
        result = {"train_seconds": time.time() - start, "epochs": args.epochs, "seed": args.seed}
        print(f"evaluating {row}: L_{args.k} on {args.test_images} test images", flush=True)
        result.update(evaluate_per_image(run_dir, args.k, args.test_images))
        results[row] = result
        results_path.write_text(json.dumps(results, indent=1) + "\n")
        print(table(results), flush=True)


if __name__ == "__main__":
    main()
