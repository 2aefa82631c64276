"""Reproduce the one-stochastic-layer rows of table 1 of Burda, Grosse & Salakhutdinov (2016),
Importance Weighted Autoencoders, on MNIST.

Protocol (the ``iwae-mnist`` preset): MNIST ``split = "iwae"`` (train on the first 59,600
training images, validate on the last 400, test on the 10,000 test images), dynamic
binarization of the training images, a 784-200-200-50-200-200-784 tanh model with a Bernoulli
decoder whose output bias starts at the logit of the training mean, Adam (beta1 0.9, beta2 0.999,
eps 1e-4), minibatches of 20, and the 3^i schedule: learning rate 1e-3 * 10^(-i/7) for 3^i passes,
i = 0..7, 3,280 passes in all. With fewer ``--epochs`` the trainer keeps the stages' fractions.

Rows: ``vae`` (k = 1; the ELBO with the analytic KL) and ``iwae`` with k = 5 or 50.
Test log p(x) is estimated by the IWAE bound L_5000 on all 10,000 test images, binarized once
with a fixed seed; active units are the dimensions u with Cov_x(E_q[u | x]) > 1e-2 (Burda et
al., sec. 5.2) over the test images.

    python benchmarks/reproduce_iwae.py --row vae --epochs 10 --out runs/iwae      # the CPU budget of docs/results.md
    python benchmarks/reproduce_iwae.py --row iwae --k 5 --epochs 10 --out runs/iwae
    python benchmarks/reproduce_iwae.py --resume runs/iwae/vae-k1                   # continue a stopped run
    python benchmarks/reproduce_iwae.py --evaluate runs/iwae/vae-k1                 # L_5000 only
    python benchmarks/reproduce_iwae.py --table --out runs/iwae                     # markdown rows
    python benchmarks/reproduce_iwae.py --full --device cuda                         # the paper's 3,280 passes, all rows
    python benchmarks/reproduce_iwae.py --row iwae --k 5 --layers 2 --epochs 820 --out runs/iwae   # two stochastic layers

L_5000, the test ELBO and the active units come from the library's evaluator (``aevb.inference.evaluate``, the
same numbers as ``aevb evaluate RUN_DIR --k 5000``).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _recipes import config_from, data_dir, read_run, threads_env, tiny_sections  # noqa: E402

# Burda et al. table 1 (MNIST), -log p(x) in nats; "vae2"/"iwae2" are the two-stochastic-layer rows.
PAPER_NLL = {("vae", 1): 86.76, ("iwae", 5): 85.54, ("iwae", 50): 84.78,
             ("vae2", 1): 85.33, ("iwae2", 5): 83.89, ("iwae2", 50): 82.90}
PRESETS = {1: "iwae-mnist", 2: "iwae-mnist-2layer"}  # stochastic layers -> preset
FULL_ROWS = (("vae", 1), ("iwae", 5), ("iwae", 50))


def row_config(row: str, k: int, epochs: int, out: str, seed: int = 0, threads: int = 1, device: str = "cpu",
               tiny: bool = False, layers: int = 1):
    """The RunConfig of one row: ``vae`` (k = 1, the ELBO) or ``iwae`` with k samples, with one stochastic
    layer (preset ``iwae-mnist``; run folder ``vae-k1``) or two (``iwae-mnist-2layer``; ``vae2-k1``)."""
    if row == "vae" and k != 1:
        raise ValueError(f"--row vae trains the k = 1 ELBO; got --k {k} (use --row iwae for k > 1)")
    objective = {"name": "elbo", "kl": "analytic", "num_samples": 1} if row == "vae" else \
        {"name": "iwae", "num_samples": k}
    sections = {"data": {"data_dir": data_dir()}, "objective": objective,
                "train": {"epochs": epochs, "seed": seed, "threads": threads, "device": device, "quiet": True,
                          "tensorboard": False},
                "out": str(Path(out) / f"{row}{'2' if layers == 2 else ''}-k{k}")}
    cfg = config_from(PRESETS[layers], sections)
    if tiny:
        from aevb.config import update
        update(cfg, tiny_sections())
    return cfg


def continue_command(run_dir: str, threads: int = 1) -> str:
    """The shell command that continues the run in ``run_dir`` exactly where its last checkpoint left it."""
    return f"python benchmarks/reproduce_iwae.py --resume {run_dir} --threads {threads}"


def resume_run(run_dir: str, threads: int = 1) -> Path:
    """Continue a run from its last checkpoint with its saved config (epochs, schedule, seed unchanged).

    The run directory may have moved (e.g. restored into a new checkout): ``out`` is set to where it is now.
    """
    from aevb.config import RunConfig
    from aevb.training.loop import train

    path = Path(run_dir)
    if not (path / "config.json").is_file():
        raise SystemExit(f"--resume {run_dir}: no config.json there; give a run directory this recipe wrote")
    cfg = RunConfig.load(path / "config.json")
    cfg.out, cfg.train.threads = str(path), threads
    print(f"continuing {path} to epoch {cfg.train.epochs}; if stopped again: {continue_command(str(path), threads)}",
          flush=True)
    return train(cfg, resume=True)


def evaluate_run(run_dir: str, k: int = 5000, seed: int = 1234, limit: int = 0, device: str = "cpu",
                 threads: int | None = None, name: str = "iwae_eval.json") -> dict:
    """L_k, the ELBO and active units of a trained run on its test split, by ``aevb.inference.evaluate``.

    The library's evaluator: the test images binarized once with ``seed``, each image encoded
    once and its k samples decoded in blocks, log-sum-exp in float64; active units counted from
    the posterior means (Var_x(E_q[u | x]) > 1e-2). ``threads`` chunk workers (None: torch's
    thread count). Writes ``name`` (JSON) into the run directory.
    """

    from aevb.data import build_datasets
    from aevb.inference.evaluate import evaluate
    from aevb.training.checkpoint import load_run

    cfg, model, _ = load_run(run_dir, which="last", device=device)
    model.eval()
    splits, info = build_datasets(cfg.data, cfg.model.likelihood)
    x = splits.test[:limit] if limit else splits.test
    start = time.time()
    ev = evaluate(model, x, info, k=k, seed=seed, progress=False, workers=threads)
    result = {"k": k, "n": ev["n"], "complete": ev["n"] == len(splits.test), "test_size": len(splits.test),
              "seed": seed, "log_px": ev["log_px"], "log_px_se": ev["log_px_se"], "nll": -ev["log_px"],
              "elbo": ev["elbo"], "elbo_se": ev["elbo_se"], "active_units": ev["active_units"],
              **{key: ev[key] for key in ("active_units_per_layer", "latent_dims") if key in ev},
              "eval_seconds": time.time() - start, "evaluator": "aevb.inference.evaluate.evaluate",
              "binarization": f"test images binarized once with seed {seed}" if info.binarization == "dynamic"
              else info.binarization}
    Path(run_dir, name).write_text(json.dumps(result, indent=2) + "\n")
    return result


def table(out: str) -> str:
    """Markdown rows for every run under ``out`` that has iwae_eval.json."""
    lines = ["| row | epochs | examples | train time | test ELBO | test L_k (nats) | -log p(x) | paper | gap | "
             "active units | L_k time |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for run_dir in sorted(Path(out).glob("*-k*")):
        ev_path = run_dir / "iwae_eval.json"
        if not ev_path.is_file():
            continue
        ev = json.loads(ev_path.read_text())
        records, summary = read_run(run_dir)
        row, k = run_dir.name.split("-k")
        key = (row, int(k))
        paper = PAPER_NLL.get(key, float("nan"))
        seconds = summary["train_seconds"] if summary else (records[-1].get("time_s", 0) if records else 0)
        elbo = f"{ev['elbo']:.2f} ± {ev['elbo_se']:.2f}" if "elbo" in ev else ""
        label = f"{row.rstrip('2').upper()} k={k}" + (", 2 layers" if row.endswith("2") else "")
        lines.append(f"| {label} | {summary['epochs'] if summary else '?'} | "
                     f"{records[-1]['examples'] if records else 0:,} | {seconds / 60:.1f} min | {elbo} | "
                     f"{ev['log_px']:.2f} ± {ev['log_px_se']:.2f} | {ev['nll']:.2f} | {paper:.2f} | "
                     f"{ev['nll'] - paper:+.2f} | {ev['active_units']} | {ev['eval_seconds'] / 60:.1f} min |"
                     + ("" if ev.get("complete", True) else f" first {ev['n']:,} test images only"))
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--row", choices=("vae", "iwae"), help="train one row")
    p.add_argument("--k", type=int, default=None, help="samples of the training bound (vae: 1; iwae: 5 or 50)")
    p.add_argument("--layers", type=int, choices=(1, 2), default=1,
                   help="stochastic layers: 1 (iwae-mnist) or 2 (iwae-mnist-2layer, 784-200-200-100-100-100-50)")
    p.add_argument("--epochs", type=int, default=3, help="passes over the 59,600 images (the paper: 3280)")
    p.add_argument("--out", default="runs/iwae")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--device", default="cpu")
    p.add_argument("--eval-k", type=int, default=5000, help="samples of the test bound L_k")
    p.add_argument("--eval-threads", type=int, default=None, help="evaluation workers (default: torch's threads)")
    p.add_argument("--eval-limit", type=int, default=0, help="evaluate only the first N test images (0: all)")
    p.add_argument("--eval-file", default="iwae_eval.json", help="name of the evaluation's JSON in the run directory")
    p.add_argument("--no-eval", action="store_true", help="train only; evaluate later with --evaluate RUN_DIR")
    p.add_argument("--evaluate", metavar="RUN_DIR", help="only evaluate a trained run")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue a stopped run from its last checkpoint "
                   "(its own config: same epochs and schedule), then evaluate it")
    p.add_argument("--table", action="store_true", help="print the markdown table of OUT's evaluated runs")
    p.add_argument("--full", action="store_true", help="the paper's budget: 3280 epochs, rows vae k=1, iwae k=5, k=50")
    p.add_argument("--tiny", action="store_true", help="smoke run on sklearn digits")
    args = p.parse_args(argv)
    threads_env(args.threads)
    if args.table:
        print(table(args.out))
        return 0
    if args.evaluate:
        print(json.dumps(evaluate_run(args.evaluate, args.eval_k, limit=args.eval_limit, device=args.device,
                                      threads=args.eval_threads, name=args.eval_file)))
        return 0
    from aevb.training.loop import train
    if args.resume:
        run_dir = resume_run(args.resume, args.threads)
        if not args.no_eval:
            print(json.dumps(evaluate_run(str(run_dir), args.eval_k, limit=args.eval_limit, device=args.device,
                                          threads=args.eval_threads)))
        return 0
    if args.full:
        rows, args.epochs = FULL_ROWS, 3280
    elif args.row:
        rows = ((args.row, args.k if args.k is not None else (1 if args.row == "vae" else 50)),)
    else:
        p.error("give --row (with --k), --full, --evaluate RUN_DIR or --table")
    for row, k in rows:
        cfg = row_config(row, k, args.epochs, args.out, args.seed, args.threads, args.device, args.tiny, args.layers)
        print(f"{row} k={k}: {cfg.out}; if stopped, continue with: {continue_command(cfg.out, args.threads)}",
              flush=True)
        run_dir = train(cfg)
        if args.no_eval:
            continue
        print(json.dumps(evaluate_run(str(run_dir), args.eval_k, limit=args.eval_limit, device=args.device,
                                      threads=args.eval_threads)))
    print(table(args.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
