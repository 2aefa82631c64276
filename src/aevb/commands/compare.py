"""Compare runs in one table: test ELBO, log p(x) and bits/dim, with what each number is a probability
(or density) of and which runs can be compared at all.

Reads each RUN_DIR's config.json, data.json, eval.json (written by `aevb evaluate`; the test split
unless --split) and summary.json (the test ELBO of training, used when there is no evaluation).
Runs in the same comparison group model the same data set in the same kind and units (binarized
images, 8-bit integers, a density of [0, 1] values, ...); numbers from different groups are about
different data and must not be ranked against each other. See docs/evaluation.md.
"""

from __future__ import annotations

import argparse
import json
import string
from pathlib import Path

from aevb.outputs.measure import comparison_key, describe_measure

HELP = "one table of several runs: what each number measures and which runs are comparable"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="run directories written by `aevb train`")
    parser.add_argument("--split", default="test", choices=("train", "valid", "test"),
                        help="evaluated split to show (default: test)")


def _read(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, json.JSONDecodeError) as e:
        raise ValueError(f"{path}: cannot read ({e})") from None


def read_row(run_dir: Path, split: str) -> dict:
    """The numbers of one run and what they measure."""
    if not (run_dir / "config.json").is_file():
        raise ValueError(f"{run_dir}: not a run directory (no config.json); give folders written by `aevb train`")
    cfg, info = _read(run_dir / "config.json"), _read(run_dir / "data.json")
    evaluated = _read(run_dir / "eval.json").get(split) or {}
    summary = _read(run_dir / "summary.json").get(split) or {}
    measure = describe_measure(info)
    return {"run": str(run_dir), "data": info.get("name", "?"), "likelihood": cfg.get("model", {}).get("likelihood", "?"),
            "kind": measure["kind"], "what": measure["what"], "bpd_label": measure["bits_per_dim_label"],
            "elbo": evaluated.get("elbo", summary.get("elbo")), "log_px": evaluated.get("log_px"),
            "k": evaluated.get("k"), "bits_per_dim": evaluated.get("bits_per_dim"), "key": comparison_key(info),
            "hint": measure["hint"]}


def _number(value, digits: int) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def format_rows(rows: list[dict], split: str) -> str:
    groups: dict[tuple, str] = {}
    for r in rows:
        groups.setdefault(r["key"], string.ascii_uppercase[len(groups) % 26])
    header = ("group", "run", "data", "likelihood", f"{split} ELBO (nats)", "log p(x) (nats)", "K", "bits/dim")
    table = [header] + [(groups[r["key"]], r["run"], r["data"], r["likelihood"], _number(r["elbo"], 2),
                         _number(r["log_px"], 2), str(r["k"] or "-"), _number(r["bits_per_dim"], 4)) for r in rows]
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in table]
    lines.append("")
    lines.append("groups (numbers are comparable only within a group: same data set, same kind of x, same units):")
    for key, letter in groups.items():
        first = next(r for r in rows if r["key"] == key)
        members = sum(r["key"] == key for r in rows)
        lines.append(f"  {letter}: {first['data']}: {first['what']}; bits/dim = {first['bpd_label']} ({members} run(s))")
    if len(groups) > 1:
        lines.append("  runs in different groups model different data (e.g. binarized vs 8-bit pixels, or a density "
                     "vs a probability): their numbers cannot be ranked against each other.")
    lines.append("ELBO <= log p(x); log p(x) is the IWAE bound L_K from `aevb evaluate` ('-': not evaluated yet). "
                 "Higher is better within a group.")
    for hint in sorted({r["hint"] for r in rows if r["hint"]}):
        lines.append(f"note: {hint}")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    rows = [read_row(Path(d), args.split) for d in args.run_dirs]
    print(format_rows(rows, args.split))
    return 0
