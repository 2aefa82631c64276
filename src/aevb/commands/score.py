"""Score examples for anomaly detection: per-example log p(x) estimate (IWAE bound L_K) and ELBO,
in nats, written as CSV in the row order of the input (lower = less likely under the model).

Beside the scored mean it prints the run's own test-split mean (from ``aevb evaluate``, else the
training's test ELBO) as a reference. A higher likelihood does not mean "more like the training
data": a model trained on Fashion-MNIST gives MNIST digits *higher* likelihood (Nalisnick et al.
2019); see docs/evaluation.md, "Out-of-distribution data".

``--data`` takes a named data set or a path; it is prepared with the run's data settings
(scaling, binarization) and, by default, every row is scored in input order (``--split all``):
``index`` is the row number of the input. Without ``--data`` the run's test split is scored
(``index`` counts within the split). See docs/evaluation.md.
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

from aevb.commands.evaluate import add_common_arguments, add_data_arguments, data_split, load, show_progress
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


def reference_line(run_dir: Path) -> str:
    """The run's own test mean log p(x) (eval.json) or test ELBO (summary.json), in words; "" if neither."""
    import json

    for name, key, what in (("eval.json", "log_px", "mean log p(x)"), ("summary.json", "elbo", "mean ELBO")):
        try:
            test = json.loads((run_dir / name).read_text()).get("test") or {}
        except (OSError, ValueError):
            continue
        if test.get(key) is not None:
            k = f", K={test['k']}" if "k" in test else ""
            return f"the run's own test split: {what} {test[key]:.3f} nats (n={test.get('n', '?')}{k})"
    return ""


def run(args: argparse.Namespace) -> int:
    from aevb.inference.evaluate import score_examples

    Path(args.out).parent.mkdir(parents=True, exist_ok=True)  # before the work, not after it
    split = data_split(args)
    cfg, model, run_info = load(args)
    x, labels, info = load_data(cfg, model, args.data, split, args.data_dir, run_info)
    if info.binarization != "dynamic":
        model.likelihood_module.check_data(x, where=f"{info.name} ({split} rows)")
    log_px, elbo = score_examples(model, x, binarization=info.binarization, k=args.k, seed=args.seed,
                                  memory_mb=args.memory_mb, progress=show_progress(args),
                                  workers=args.threads or None, labels=labels)
    write_scores(args.out, log_px, elbo, labels)
    print(f"wrote {len(x)} scores (log p(x) with K={args.k}, ELBO; nats) to {args.out}; "
          f"mean log p(x) {float(log_px.mean()):.3f}")
    reference = reference_line(Path(args.run_dir))
    if reference:
        print(f"  compare with {reference}")
    print("  note: higher log p(x) is not 'more like the training data': models often give other data sets "
          "higher likelihood (Nalisnick et al. 2019); see docs/evaluation.md")
    return 0
