"""Named data sets and what a data set looks like once loaded.

  aevb data list                    every named data set, where it is found or how to get it
  aevb data show NAME [--data-dir]  splits with sizes, shape, value range and support

NAME is a named data set or a path to your own file or folder (.npy, .npz, CSV, images).
"""

from __future__ import annotations

import argparse

HELP = "list the named data sets, or show one's splits, shape, value range and support"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    listing = sub.add_parser("list", help="every named data set and where it is found")
    listing.add_argument("--data-dir", default="", help="also look in this folder")
    show = sub.add_parser("show", help="load a data set and print its splits")
    show.add_argument("name", help="named data set (see `aevb data list`) or a path")
    show.add_argument("--data-dir", default="", help="folder holding the data set's files")
    show.add_argument("--likelihood", default="gaussian",
                      help="likelihood the data are prepared for (decides binarize auto; default: gaussian, no binarization)")
    show.add_argument("--set", dest="overrides", action="append", default=[], metavar="data.KEY=VALUE",
                      help="any data option, e.g. --set data.split=iwae (repeatable)")


def list_datasets(data_dir: str = "") -> str:
    """One block per named data set: name, summary, where found or how to get it."""
    from aevb.data import DATASETS

    lines = []
    for name, entry in DATASETS.items():
        lines += [name, f"    {entry.summary}", f"    {entry.locate(data_dir)}"]
    lines.append("Your own data: --data PATH to a .npy/.npz array, a CSV table or a folder of images (docs/data.md).")
    return "\n".join(lines)


def show_dataset(data_cfg, likelihood: str) -> str:
    """A table of the splits of ``data_cfg`` with sizes and value ranges, then the DataInfo."""
    from aevb.data import build_datasets

    splits, info = build_datasets(data_cfg, likelihood)
    lines = [f"{info.name}: shape {info.shape} ({info.num_dims} dims), support {info.support}, "
             f"levels {info.levels}, binarization {info.binarization}, dequantization {info.dequantization}",
             f"source: {info.source}", f"split: {info.split}",
             f"{'split':<6} {'examples':>9} {'min':>9} {'max':>9} {'mean':>9}  labels"]
    for split in ("train", "valid", "test"):
        x, y = splits.get(split)
        if len(x):
            stats = f"{float(x.min()):9.4g} {float(x.max()):9.4g} {float(x.double().mean()):9.4g}"
        else:
            stats = f"{'-':>9} {'-':>9} {'-':>9}"
        labels = "-" if y is None else f"{int(y.unique().numel())} classes"
        lines.append(f"{split:<6} {len(x):>9,} {stats}  {labels}")
    if info.binarization == "dynamic":
        lines.append("values are pixel intensities; each batch is binarized afresh when drawn (dynamic binarization)")
    if info.label_names:
        lines.append(f"label names: {', '.join(map(str, info.label_names))}")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    if args.action == "list":
        print(list_datasets(args.data_dir))
        return 0
    from aevb.config import RunConfig, apply_overrides

    cfg = RunConfig()
    cfg.data.name, cfg.data.data_dir = args.name, args.data_dir
    for item in args.overrides:
        if not item.startswith("data."):
            raise ValueError(f"--set {item}: only data.* options apply to `aevb data show`")
    apply_overrides(cfg, args.overrides)
    print(show_dataset(cfg.data, args.likelihood))
    return 0
