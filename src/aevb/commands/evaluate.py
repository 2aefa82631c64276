"""Evaluate a trained run: ELBO, log p(x) by the importance-weighted bound L_K (K=5000 by default,
Burda et al. 2016), bits/dim, active units, on one split, deterministic for --seed.

Prints a table and saves ``eval-<split>-k<K>.json`` and ``eval.json`` (the latest evaluation of
each split: {"test": {...}, "train": {...}}) in the run directory; ``--json`` prints the JSON instead of the table. See docs/evaluation.md.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from aevb.outputs.measure import describe_measure, protocol_text, summarize_likelihood

HELP = "estimate log p(x) (IWAE bound, K=5000), ELBO, bits/dim and active units of a trained run"
SPLITS = ("train", "valid", "test")
DATA_SPLITS = ("all",) + SPLITS
WHICH_HELP = "checkpoint: last, best or step-N (default: last)"
DEVICES = ("auto", "cpu", "cuda", "mps")
DEVICE_HELP = "device: auto (cuda, then mps, then cpu), cpu, cuda or mps (default: auto)"


def add_common_arguments(parser: argparse.ArgumentParser) -> None:
    """RUN_DIR, --which, --k, --seed, --memory-mb, --device, --threads, --quiet (shared with score/encode)."""
    from aevb.config import EvalConfig

    e = EvalConfig()
    parser.add_argument("run_dir", metavar="RUN_DIR", help="run directory written by `aevb train`")
    parser.add_argument("--which", default="last", help=WHICH_HELP)
    parser.add_argument("--k", type=int, default=e.k, help=f"importance samples per example (default: {e.k})")
    parser.add_argument("--seed", type=int, default=e.seed, help=f"seed of binarization and sampling (default: {e.seed})")
    parser.add_argument("--memory-mb", type=int, default=e.memory_mb,
                        help=f"memory budget of one block of work (default: {e.memory_mb})")
    parser.add_argument("--device", default="auto", choices=DEVICES, help=DEVICE_HELP)
    parser.add_argument("--threads", type=int, default=0,
                        help="CPU threads, each evaluating whole chunks (default 0: torch's thread count)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_common_arguments(parser)
    parser.add_argument("--split", default="test", choices=SPLITS, help="split to evaluate (default: test)")
    parser.add_argument("--json", action="store_true", help="print the result as JSON instead of a table")


def load(args: argparse.Namespace):
    """(cfg, model, info) of the run, on the requested device and thread count."""
    from aevb.inference.importance import MAX_K
    from aevb.training.checkpoint import load_run
    from aevb.training.loop import resolve_device

    if not 1 <= getattr(args, "k", 1) <= MAX_K:
        raise ValueError(f"--k must be between 1 and {MAX_K:,} importance samples per example, got {args.k} "
                         "(5000 is the usual choice)")
    if args.threads < 0:
        raise ValueError(f"--threads must be >= 0, got {args.threads}")
    return load_run(args.run_dir, which=args.which, device=resolve_device(args.device))


def add_data_arguments(parser: argparse.ArgumentParser, verb: str) -> None:
    """--data, --data-dir and --split (shared by score and encode)."""
    parser.add_argument("--data", default=None, help="named data set or path (default: the run's data set)")
    parser.add_argument("--data-dir", default=None, help="folder holding the data set's files")
    parser.add_argument("--split", default=None, choices=DATA_SPLITS,
                        help=f"rows to {verb}: all (every row, in input order, unshuffled) or one split of the "
                             "run's seeded train/valid/test split (default: all with --data, else test)")


def show_progress(args: argparse.Namespace) -> bool:
    """A progress bar unless --quiet or stderr is not a terminal (a log file gets no carriage returns)."""
    import sys

    return not getattr(args, "quiet", False) and sys.stderr.isatty()


def data_split(args: argparse.Namespace) -> str:
    """The --split of score/encode: as given, else "all" for --data and "test" for the run's data."""
    return args.split or ("all" if args.data else "test")


def format_table(r: dict, run_dir: str, which: str) -> str:
    measure = r.get("measure") or {}
    label = measure.get("bits_per_dim_label", "bits/dim")
    if r["bits_per_dim"] is None:
        bpd = "n/a (a density of continuous data, not a probability)"
    else:
        bpd = f"{r['bits_per_dim']:.4f}  ({label})"
    rows = [
        ("run", f"{run_dir} (checkpoint {which})"),
        ("data", f"{r['data']} {r['split']} split, n = {r['n']}"),
        ("ELBO", f"{r['elbo']:.3f} ± {r['elbo_se']:.3f} nats  (recon {r['recon']:.3f}, KL {r['kl']:.3f})"),
        ("log p(x)", f"{r['log_px']:.3f} ± {r['log_px_se']:.3f} nats  (IWAE bound L_K, K={r['k']})"),
        ("measures", measure.get("what", "")),
        ("bits/dim", bpd),
        ("p(x|z)", r.get("p_x_given_z", "")),
        ("active units", f"{r['active_units']}/{r['latent_dim']}  (Var over x of E_q[z_d] > 0.01)"
                         + ("; per layer " + ", ".join(f"z_{i + 1} {a}/{d}" for i, (a, d) in
                                                       enumerate(zip(r["active_units_per_layer"], r["latent_dims"])))
                            if "active_units_per_layer" in r else "")),
        ("protocol", protocol_text(r["binarization"], r["seed"], r.get("measure_info"))),
    ] + ([("observed", r["observed"])] if r.get("observed") else [])
    if r.get("conditional"):  # a conditional VAE: the numbers are of log p(x|y)
        rows.insert(2, ("conditional", r["conditional"]))
    lines = [f"  {name:<13} {value}" for name, value in rows if value]
    if measure.get("hint"):
        lines.append(f"  {'note':<13} {measure['hint']}")
    return "\n".join(lines)


def describe_result(result: dict, model, info) -> dict:
    """Adds what the numbers measure and p(x|z)'s learned scale to an ``evaluate`` result."""
    desc = model.likelihood_module.describe()
    result["measure"] = describe_measure(info)
    result["measure_info"] = {"support": info.support, "binarization": info.binarization, "levels": info.levels,
                              "dequantization": info.dequantization}
    result["p_x_given_z"] = summarize_likelihood(desc)
    if "scale" in desc:
        result["sigma"] = {k: v for k, v in desc["scale"].items() if k != "values"}
    return result


def merge_latest(path: Path, result: dict) -> dict:
    """eval.json's new content: {split: latest result of that split}, keeping the other splits.

    An unreadable file or one in the older flat layout (one result) is kept as far as it can be.
    """
    try:
        old = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        old = {}
    if not isinstance(old, dict):
        old = {}
    if isinstance(old.get("split"), str):  # older flat layout: one result
        old = {old["split"]: old}
    merged = {k: v for k, v in old.items() if k in SPLITS and isinstance(v, dict)}
    merged[result["split"]] = result
    return merged


def run(args: argparse.Namespace) -> int:
    from aevb.inference.evaluate import evaluate
    from aevb.training.checkpoint import write_json_atomic

    cfg, model, info = load(args)
    from aevb.data.run_rows import load_data

    x, labels, _ = load_data(cfg, model, None, args.split)
    result = evaluate(model, x, info, k=args.k, seed=args.seed, memory_mb=args.memory_mb,
                      labels=labels if getattr(model, "conditional", False) else None,
                      progress=show_progress(args) and not args.json, split=args.split, workers=args.threads or None)
    result["checkpoint"] = args.which
    describe_result(result, model, info)
    run_dir = Path(args.run_dir)
    write_json_atomic(run_dir / f"eval-{args.split}-k{args.k}.json", result)
    write_json_atomic(run_dir / "eval.json", merge_latest(run_dir / "eval.json", result))
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(format_table(result, str(run_dir), args.which))
        print(f"  {'saved':<13} {run_dir / f'eval-{args.split}-k{args.k}.json'} and eval.json")
    return 0
