"""Reconstruct the first N examples of a split: data beside E[x | z = E_q[z|x]] in one PNG.

The reconstruction is the mean of p(x|z) at the posterior mean (for the continuous Bernoulli its
mean, not its parameter lambda). With dynamic binarization the encoder is given the pixel
intensities, as the data panel shows them.
"""

from __future__ import annotations

import argparse

from aevb.commands.sample import check_png_args

HELP = "reconstruct examples of a split into a PNG (data beside reconstruction)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_dir", metavar="RUN_DIR", help="run directory written by `aevb train`")
    parser.add_argument("-n", type=int, default=50, help="number of examples (default: 50)")
    parser.add_argument("--out", default=None, metavar="FILE.png",
                        help="PNG file to write (default: RUN_DIR/plots/reconstructions.png)")
    parser.add_argument("--split", default="test", choices=("train", "valid", "test"), help="split (default: test)")
    parser.add_argument("--which", default="last", help="checkpoint: last, best or step-N (default: last)")


def run(args: argparse.Namespace) -> int:
    from aevb.data import build_datasets
    from aevb.outputs.figures import choose_cmap, labelled, to_display
    from aevb.outputs.plots import plot_reconstructions, save_figure
    from aevb.training.checkpoint import load_run

    cfg, model, info = load_run(args.run_dir, which=args.which)
    out = check_png_args(args.n, args.out, args.run_dir, "reconstructions.png")
    splits, _ = build_datasets(cfg.data, cfg.model.likelihood)
    x, labels = splits.get(args.split)
    if len(x) == 0:
        raise ValueError(f"the {args.split} split of {info.name} is empty; choose another --split")
    if args.n > len(x):
        raise ValueError(f"-n {args.n}: the {args.split} split of {info.name} has only {len(x)} examples; "
                         f"use -n {len(x)} or less, or another --split")
    x = x[:args.n]
    rebuilt = labelled(model, None if labels is None else labels[:args.n]).reconstruct(x)  # conditional: given y
    ncols = min(10, len(x))
    save_figure(plot_reconstructions(to_display(model, x), to_display(model, rebuilt), info.shape,
                                     ncols=ncols, cmap=choose_cmap(splits.train)), out)
    print(out)
    return 0
