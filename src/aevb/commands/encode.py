"""Encode a data set with a trained run: posterior means and log-variances of q(z|x) (and labels
when known) saved as a numeric .npz (no pickle), in the row order of the input.

Examples are encoded as prepared by the run's data settings but without binarization (the
posterior of the pixel intensities). See docs/evaluation.md.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from .evaluate import SPLITS, load, load_data

HELP = "posterior means and log-variances of a data set under a trained run (.npz)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_dir", metavar="RUN_DIR", help="run directory written by `aevb train`")
    parser.add_argument("--which", default="last", help="checkpoint: last, best or step-N (default: last)")
    parser.add_argument("--data", default=None, help="named data set or path (default: the run's data set)")
    parser.add_argument("--data-dir", default=None, help="folder holding the data set's files")
    parser.add_argument("--split", default="test", choices=SPLITS, help="split of --data to encode (default: test)")
    parser.add_argument("--out", required=True, help=".npz file to write with arrays mu, log_var[, labels]")
    parser.add_argument("--device", default="cpu", choices=("auto", "cpu", "cuda", "mps"), help="device (default: cpu)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (default 0: torch's default)")


def run(args: argparse.Namespace) -> int:
    from ..evaluate import encode

    cfg, model, _ = load(args)
    if args.threads:
        torch.set_num_threads(args.threads)
    x, labels, info = load_data(cfg, model, args.data, args.split, args.data_dir)
    mu, log_var = encode(model, x)
    arrays = {"mu": mu.numpy(), "log_var": log_var.numpy()}
    if labels is not None:
        arrays["labels"] = labels.numpy()
    np.savez(args.out, **arrays)
    print(f"wrote mu and log_var ({len(x)} x {mu.shape[1]}){' and labels' if labels is not None else ''} "
          f"of {info.name} {args.split} to {args.out}")
    return 0
