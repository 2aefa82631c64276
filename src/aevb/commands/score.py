"""Score examples for anomaly detection: per-example log p(x) estimate (IWAE bound L_K) and ELBO,
in nats, written as CSV in the row order of the input (lower = more unusual).

``--data`` takes a named data set or a path; it is prepared with the run's data settings
(scaling, binarization) and, by default, every row is scored in input order (``--split all``):
``index`` is the row number of the input. Without ``--data`` the run's test split is scored
(``index`` counts within the split). See docs/evaluation.md.
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

from aevb.commands.evaluate import add_common_arguments, add_data_arguments, data_split, load
from aevb.data.run_rows import load_data

HELP = "per-example log p(x) and ELBO of a data set under a trained run (CSV, input row order)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_common_arguments(parser)
    add_data_arguments(parser, "score")
    parser.add_argument("--out", required=True, help="CSV file to write: index,log_px,elbo[,label]")


def write_scores(path: str | Path, log_px, elbo, labels=None) -> None:
    """CSV with a header; one row per example in input order; values in nats."""
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["index", "log_px", "elbo"] + (["label"] if labels is not None else []))
        for i in range(len(log_px)):
            row = [i, f"{float(log_px[i]):.6f}", f"{float(elbo[i]):.6f}"]
            w.writerow(row + ([int(labels[i])] if labels is not None else []))


def run(args: argparse.Namespace) -> int:
    from aevb.inference.evaluate import score_examples

    split = data_split(args)
    cfg, model, run_info = load(args)
    x, labels, info = load_data(cfg, model, args.data, split, args.data_dir, run_info)
    if info.binarization != "dynamic":
        model.likelihood_module.check_data(x, where=f"{info.name} ({split} rows)")
    log_px, elbo = score_examples(model, x, binarization=info.binarization, k=args.k, seed=args.seed,
                                  memory_mb=args.memory_mb, progress=not args.quiet,
                                  workers=args.threads or None)
    write_scores(args.out, log_px, elbo, labels)
    print(f"wrote {len(x)} scores (log p(x) with K={args.k}, ELBO; nats) to {args.out}; "
          f"mean log p(x) {float(log_px.mean()):.3f}")
    return 0
