"""Write one self-contained HTML report of a run: evaluation table (summary.json, eval.json),
data description, training curves, every figure (embedded as base64 PNG), the resolved
configuration and the aevb version. It opens from disk in any browser, with no server and no
network: no scripts, no external resources.

When the checkpoint, config.json or data.json is damaged the page is still written (with the
figures already in RUN_DIR/plots and a note), a warning ``aevb report: warning: ...`` goes to
stderr and the exit code is 1.
"""

from __future__ import annotations

import argparse
import sys

HELP = "write a self-contained HTML report of a run"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_dir", metavar="RUN_DIR", help="run directory written by `aevb train`")
    parser.add_argument("--out", default=None, metavar="FILE.html", help="HTML file (default: RUN_DIR/report.html)")
    parser.add_argument("--which", default="last", help="checkpoint: last, best or step-N (default: last)")
    parser.add_argument("--seed", type=int, default=0, help="seed for the prior samples (default: 0)")


def run(args: argparse.Namespace) -> int:
    from aevb.outputs.report import write_report_checked

    out, problems = write_report_checked(args.run_dir, args.out, args.which, args.seed)
    print(out)
    for problem in problems:
        print(f"aevb report: warning: {problem}; the report is partial", file=sys.stderr)
    return 1 if problems else 0
