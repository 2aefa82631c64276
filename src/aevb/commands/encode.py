"""Encode a data set with a trained run: posterior means and log-variances of q(z|x) (and labels
when known), in the row order of the input, saved as a numeric .npz (arrays mu, log_var, labels;
no pickle) or, for a --out ending in .csv, a CSV with columns mu_0.., log_var_0.. [, label].
A model with L >= 2 stochastic layers adds mu_2, log_var_2, ... (columns mu2_0.., log_var2_0..)
for the marginals q(z_l|x); moments without a closed form are Monte Carlo estimates (the
command says with how many samples).

With ``--data`` every row is encoded in input order by default (``--split all``); without it, the
run's test split. Examples are encoded as prepared by the run's data settings but without binarization (the
posterior of the pixel intensities). See docs/evaluation.md.
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import numpy as np
import torch

from aevb.commands.evaluate import DEVICE_HELP, DEVICES, WHICH_HELP, add_data_arguments, data_split, load
from aevb.data.run_rows import load_data

HELP = "posterior means and log-variances of a data set under a trained run (.npz)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_dir", metavar="RUN_DIR", help="run directory written by `aevb train`")
    parser.add_argument("--which", default="last", help=WHICH_HELP)
    add_data_arguments(parser, "encode")
    parser.add_argument("--out", required=True,
                        help="file to write: .npz (arrays mu, log_var[, labels]) or .csv (mu_0.., log_var_0..[, label])")
    parser.add_argument("--device", default="auto", choices=DEVICES, help=DEVICE_HELP)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (default 0: torch's default)")


def write_csv(path: str, layers: list[tuple[np.ndarray, np.ndarray]], labels: np.ndarray | None) -> None:
    """One row per example: mu_0..mu_{D-1}, log_var_0..log_var_{D-1} (layer 1), then mu2_0.., log_var2_0..
    for each upper layer, [, label]."""
    header = []
    for layer, (mu, _) in enumerate(layers):
        tag = "" if layer == 0 else str(layer + 1)
        header += [f"mu{tag}_{d}" for d in range(mu.shape[1])] + [f"log_var{tag}_{d}" for d in range(mu.shape[1])]
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header + (["label"] if labels is not None else []))
        for i in range(len(layers[0][0])):
            row = [f"{v:.9g}" for mu, log_var in layers for v in (*mu[i], *log_var[i])]
            w.writerow(row + ([int(labels[i])] if labels is not None else []))


def run(args: argparse.Namespace) -> int:
    from aevb.inference.evaluate import encode_layers

    suffix = Path(args.out).suffix.lower()
    if suffix not in (".npz", ".csv"):
        raise ValueError(f"--out {args.out}: unknown file type {suffix or '(none)'}; use a name ending in .npz or .csv")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)  # before the work, not after it
    split = data_split(args)
    cfg, model, run_info = load(args)
    if args.threads:
        torch.set_num_threads(args.threads)
    x, labels, info = load_data(cfg, model, args.data, split, args.data_dir, run_info)
    layers, hows = encode_layers(model, x, labels=labels)  # labels: used by a conditional model, q(z|x,y)
    arrays = {}
    for layer, (mu, log_var) in enumerate(layers):
        tag = "" if layer == 0 else f"_{layer + 1}"
        arrays[f"mu{tag}"], arrays[f"log_var{tag}"] = mu.numpy(), log_var.numpy()
    if labels is not None:
        arrays["labels"] = labels.numpy()
    if suffix == ".csv":
        write_csv(args.out, [(m.numpy(), v.numpy()) for m, v in layers], arrays.get("labels"))
    else:
        np.savez(args.out, **arrays)  # type: ignore[arg-type]
    sizes = " + ".join(str(mu.shape[1]) for mu, _ in layers)
    print(f"wrote mu and log_var ({len(x)} x {sizes}){' and labels' if labels is not None else ''} "
          f"of {info.name} ({split} rows) to {args.out}")
    for layer, how in enumerate(hows):
        if how != "closed form":
            print(f"layer {layer + 1}: posterior mean and variance of q(z_{layer + 1}|x) by {how} per example")
    return 0
