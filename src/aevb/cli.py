"""Command line: ``aevb COMMAND [options]``. Each command lives in ``aevb/commands/<name>.py``
with ``HELP``, ``add_arguments(parser)`` and ``run(args) -> int``; this file only dispatches.

Set ``AEVB_DEBUG=1`` to see the full traceback of an error instead of its one-line message.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

# command name -> module; adding a command = one module + one line here (tests check the table).
COMMANDS = {
    "train": "aevb.commands.train",
    "explain": "aevb.commands.explain",
    "data": "aevb.commands.data",
    "export": "aevb.commands.export",
    "sample": "aevb.commands.sample",
    "reconstruct": "aevb.commands.reconstruct",
    "plot": "aevb.commands.plot",
    "report": "aevb.commands.report",
    "evaluate": "aevb.commands.evaluate",
    "score": "aevb.commands.score",
    "encode": "aevb.commands.encode",
    "impute": "aevb.commands.impute",
    "compare": "aevb.commands.compare",
}


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    pass


def build_parser() -> argparse.ArgumentParser:
    from aevb import __version__

    parser = argparse.ArgumentParser(
        prog="aevb", formatter_class=HelpFormatter,
        description="Variational autoencoders with exact likelihoods: every number in nats.")
    parser.add_argument("--version", action="version", version=f"aevb {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, module_name in COMMANDS.items():
        module = importlib.import_module(module_name)
        p = sub.add_parser(name, help=module.HELP, description=module.__doc__, formatter_class=HelpFormatter)
        module.add_arguments(p)
        p.set_defaults(_run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    try:
        return int(args._run(args) or 0)
    except KeyboardInterrupt:
        print(f"aevb {args.command}: interrupted", file=sys.stderr)
        return 130
    except (ValueError, OSError, RuntimeError, KeyError) as e:
        if os.environ.get("AEVB_DEBUG"):
            raise
        message = str(e) if not isinstance(e, KeyError) else f"missing key {e}"
        print(f"aevb {args.command}: error: {message}", file=sys.stderr)
        return 2
