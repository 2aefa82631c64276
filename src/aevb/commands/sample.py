"""Decode draws from the prior of a trained run into one PNG grid.

By default each cell shows the mean E[x|z] of p(x|z) for z ~ p(z); --draws shows x ~ p(x|z)
instead (for a Bernoulli likelihood: binary pixels). Tabular data are drawn as a heat map
(sample x dimension). A conditional model (model.conditional) samples p(x|z,y), z ~ p(z|y): every
sample of class ``--label C``, or by default the classes 0, 1, ... in turn (a 10-column grid of
10 classes then shows one class per column).
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

HELP = "draw samples from the prior of a trained model into a PNG"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_dir", metavar="RUN_DIR", help="run directory written by `aevb train`")
    parser.add_argument("-n", type=int, default=100, help="number of samples (default: 100)")
    parser.add_argument("--out", default=None, metavar="FILE.png",
                        help="PNG file to write (default: RUN_DIR/plots/samples.png)")
    parser.add_argument("--seed", type=int, default=0, help="seed of z ~ p(z) and of the draws (default: 0)")
    parser.add_argument("--draws", action="store_true", help="show x ~ p(x|z) instead of the mean of p(x|z)")
    parser.add_argument("--which", default="last", help="checkpoint: last, best or step-N (default: last)")
    parser.add_argument("--label", type=int, default=None,
                        help="conditional models: draw every sample of this class (default: the classes in turn)")


def check_png_args(n: int, out: str | None, run_dir: str = "", default: str = "") -> Path:
    """Refuse a non-positive count or an output that is not a .png file; ``out`` None means
    RUN_DIR/plots/``default``."""
    if n < 1:
        raise ValueError(f"-n must be a positive number of images, got {n}")
    if out is None:
        out = str(Path(run_dir) / "plots" / default)
    path = Path(out)
    if path.suffix.lower() != ".png":
        raise ValueError(f"--out {out}: the file name must end in .png")
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def run(args: argparse.Namespace) -> int:
    import torch

    from aevb.data import build_datasets
    from aevb.outputs.figures import choose_cmap, to_display
    from aevb.outputs.plots import plot_samples, save_figure
    from aevb.training.checkpoint import load_run

    cfg, model, info = load_run(args.run_dir, which=args.which)
    out = check_png_args(args.n, args.out, args.run_dir, "samples.png")
    splits, _ = build_datasets(cfg.data, cfg.model.likelihood)
    g = torch.Generator().manual_seed(args.seed)
    torch.manual_seed(args.seed)  # x ~ p(x|z) uses the global generator
    if args.label is not None and not getattr(model, "conditional", False):
        raise ValueError(f"--label {args.label}: the run's model is not conditional (model.conditional = false)")
    if getattr(model, "conditional", False):
        labels = torch.full((args.n,), args.label) if args.label is not None else None
        x = model.sample(args.n, generator=g, mean=not args.draws, labels=labels)
    else:
        x = model.sample(args.n, generator=g, mean=not args.draws)
    title = "samples: x ~ p(x|z), z ~ p(z)" if args.draws else "samples: mean of p(x|z), z ~ p(z)"
    ncols = min(10, math.ceil(math.sqrt(args.n))) if args.n < 100 else 10
    save_figure(plot_samples(to_display(model, x), info.shape, ncols=ncols, title=title, cmap=choose_cmap(splits.train)), out)
    print(out)
    return 0
