"""Fill the missing entries of a data file with a run trained with ``data.missing = mask``.

Each NaN (in a .npy/.npz) or empty/NA field (in a CSV) is replaced by its posterior-predictive
mean estimated by self-normalised importance sampling with K samples (MIWAE's estimator,
Mattei & Frellsen 2019; see ``aevb.inference.impute``). The file is prepared with the run's
data settings, imputed in the model's units and written back in the file's own units (scaling
and standardization undone): a CSV for ``--out *.csv`` (no header, the label column left out),
else a .npy of the data's shape. Observed entries are written unchanged.
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

import numpy as np

HELP = "fill the missing (NaN) entries of a data file by importance-weighted imputation (MIWAE)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from aevb.commands.evaluate import DEVICE_HELP, DEVICES, WHICH_HELP

    parser.add_argument("run_dir", metavar="RUN_DIR", help="run directory written by `aevb train` with data.missing = mask")
    parser.add_argument("--data", required=True, help="file with missing entries (.csv with empty/NA fields, .npy/.npz with NaN)")
    parser.add_argument("--out", required=True, help="file to write: .csv or .npy")
    parser.add_argument("--k", type=int, default=1000, help="importance samples per example (default: 1000)")
    parser.add_argument("--seed", type=int, default=1234, help="seed of the importance samples (default: 1234)")
    parser.add_argument("--which", default="last", help=WHICH_HELP)
    parser.add_argument("--device", default="auto", choices=DEVICES, help=DEVICE_HELP)
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def write_array(path: str | Path, x: np.ndarray) -> None:
    """(N, ...) values as a CSV (one example per row, flattened) or a .npy."""
    path = Path(path)
    if path.suffix.lower() == ".csv":
        np.savetxt(path, x.reshape(len(x), -1), delimiter=",", fmt="%.7g")
    else:
        np.save(path, x)


def run(args: argparse.Namespace) -> int:
    from aevb.commands.evaluate import show_progress
    from aevb.data import load_raw
    from aevb.data.run_rows import load_data
    from aevb.data.transforms import from_model_values
    from aevb.inference.impute import impute
    from aevb.training.checkpoint import load_run
    from aevb.training.loop import resolve_device

    Path(args.out).parent.mkdir(parents=True, exist_ok=True)  # before the work, not after it
    cfg, model, run_info = load_run(args.run_dir, which=args.which, device=resolve_device(args.device))
    if getattr(run_info, "missing", "error") != "mask":
        raise ValueError(f"{args.run_dir} was trained without data.missing = mask; its encoder cannot read missing "
                         "entries. Train with --set data.missing=mask to impute")
    x, _, info = load_data(cfg, model, args.data, "all", None, run_info)
    model.likelihood_module.check_data(x, where=f"{args.data}")
    filled = impute(model, x, k=args.k, seed=args.seed, progress=show_progress(args))
    raw = load_raw(dataclasses.replace(cfg.data, name=args.data))
    values = from_model_values(filled, raw, info).numpy().reshape((len(filled), *info.shape))
    write_array(args.out, values)
    print(f"imputed {int(np.isnan(x.numpy()).sum())} missing entries of {len(x)} examples (K={args.k}) "
          f"-> {args.out}")
    return 0
