"""Draw every applicable figure of a trained run as PNG files.

Writes RUN_DIR/plots/ (or --out DIR): reconstructions, samples (means of p(x|z)), sample_draws
(x ~ p(x|z)), manifold (AEVB figure 4; image data, latent_dim >= 2), traversals (most active
dimension first), latent (test posterior means coloured by label, PCA when latent_dim > 2) and
curves (bound vs training examples seen, log axis; AEVB figure 2). --tsne adds latent_tsne.png.
See docs/figures.md.
"""

from __future__ import annotations

import argparse
from pathlib import Path

HELP = "draw all figures of a run as PNG files"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_dir", metavar="RUN_DIR", help="run directory written by `aevb train`")
    parser.add_argument("--out", default=None, metavar="DIR", help="folder for the PNGs (default: RUN_DIR/plots)")
    parser.add_argument("--which", default="last", help="checkpoint: last, best or step-N (default: last)")
    parser.add_argument("--seed", type=int, default=0, help="seed for the prior samples (default: 0)")
    parser.add_argument("--tsne", action="store_true", help="also draw latent_tsne.png (t-SNE; slower)")
    parser.add_argument("--dpi", type=int, default=100, help="resolution of the PNGs (default: 100)")


def run(args: argparse.Namespace) -> int:
    from aevb.outputs.figures import BASIC, load_context, write_plots

    ctx = load_context(args.run_dir, args.which, args.seed)
    names = BASIC + ("sample_draws",) + (("latent_tsne",) if args.tsne else ())
    out = Path(args.out) if args.out else Path(args.run_dir) / "plots"
    for path in write_plots(ctx, out, names, dpi=args.dpi):
        print(path)
    for name, reason in ctx.skipped.items():
        print(f"skipped {name}: {reason}")
    return 0
