"""Write one self-contained HTML report of a run: evaluation table (summary.json, eval.json),
data description, training curves, every figure (embedded as base64 PNG), the resolved
configuration and the aevb version. It opens from disk in any browser, with no server and no
network: no scripts, no external resources.
"""

from __future__ import annotations

import argparse

HELP = "write a self-contained HTML report of a run"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_dir", metavar="RUN_DIR", help="run directory written by `aevb train`")
    parser.add_argument("--out", default=None, metavar="FILE.html", help="HTML file (default: RUN_DIR/report.html)")
    parser.add_argument("--which", default="last", help="checkpoint: last, best or step-N (default: last)")
    parser.add_argument("--seed", type=int, default=0, help="seed for the prior samples (default: 0)")


def run(args: argparse.Namespace) -> int:
    from ..report import write_report

    print(write_report(args.run_dir, args.out, args.which, args.seed))
    return 0
