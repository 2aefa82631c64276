"""Train a VAE and write a run directory (config, weights, metrics, figures).

Settings come from the defaults, then --preset, then --config FILE (TOML or JSON), then the
flags below, then --set section.key=value (any field; see docs/configuration.md).

--resume RUN_DIR continues an interrupted run exactly from its last checkpoint, with the run's
saved config; only the train settings in aevb.config.RESUMABLE may be changed then (e.g. --epochs to train longer).
Under torchrun (``torchrun --nproc_per_node=N -m aevb train ...``) the run is data-parallel
(DistributedDataParallel; docs/training.md).
"""

from __future__ import annotations

import argparse
from dataclasses import fields
from typing import Any

from aevb.config import (
    RESUMABLE,
    RunConfig,
    apply_overrides,
    field_help,
    list_presets,
    preset_description,
    read_config_file,
    read_preset,
    update,
)

HELP = "train a VAE on a named data set or your own files"

# flag -> (section, key). Flags default to None so only what the user typed overrides presets.
FLAGS = {
    "--data": ("data", "name"),
    "--data-dir": ("data", "data_dir"),
    "--binarize": ("data", "binarize"),
    "--dequantize": ("data", "dequantize"),
    "--standardize": ("data", "standardize"),
    "--likelihood": ("model", "likelihood"),
    "--sigma": ("model", "sigma"),
    "--latent-dim": ("model", "latent_dim"),
    "--hidden": ("model", "hidden"),
    "--activation": ("model", "activation"),
    "--arch": ("model", "arch"),
    "--posterior": ("model", "posterior"),
    "--flow-steps": ("model", "flow_steps"),
    "--objective": ("objective", "name"),
    "--kl": ("objective", "kl"),
    "--samples": ("objective", "num_samples"),
    "--beta": ("objective", "beta"),
    "--epochs": ("train", "epochs"),
    "--batch-size": ("train", "batch_size"),
    "--optimizer": ("train", "optimizer"),
    "--lr": ("train", "lr"),
    "--seed": ("train", "seed"),
    "--device": ("train", "device"),
    "--threads": ("train", "threads"),
}


def _field(section: str, key: str):
    sub = getattr(RunConfig(), section)
    return next(f for f in fields(sub) if f.name == key), getattr(sub, key)


def add_config_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags of FLAGS plus --preset, --config and --set."""
    from aevb.models.likelihoods import LIKELIHOODS
    from aevb.models.posteriors import POSTERIORS

    for flag, (section, key) in FLAGS.items():
        f, default = _field(section, key)
        choices = f.metadata.get("choices")
        if (section, key) == ("model", "likelihood"):
            choices = tuple(sorted(LIKELIHOODS))
        if (section, key) == ("model", "posterior"):
            choices = tuple(POSTERIORS)
        shown = ",".join(map(str, default)) if isinstance(default, list) else default
        kwargs: dict[str, Any] = {"default": None, "help": f"{field_help(section, key)} (default: {shown}; {section}.{key})"}
        if choices:
            kwargs["choices"] = choices
        elif isinstance(default, bool):
            kwargs["type"] = str
        elif isinstance(default, int) and not isinstance(default, list):
            kwargs["type"] = int
        elif isinstance(default, float):
            kwargs["type"] = float
        parser.add_argument(flag, **kwargs)
    parser.add_argument("--preset", default=None, metavar="NAME",
                        help=f"start from a named preset: {', '.join(list_presets())} (see --list-presets)")
    parser.add_argument("--list-presets", action="store_true", help="print the presets with a line each and exit")
    parser.add_argument("--config", default=None, help="TOML or JSON file with [data], [model], [objective], [train], [eval] tables")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help="override any config field, e.g. --set train.lr=3e-4 (repeatable)")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser)
    parser.add_argument("--out", default=None, help="run directory to write, new or empty (default: runs/<timestamp>); "
                                                    "a folder that already holds a run is refused unless --overwrite")
    parser.add_argument("--overwrite", action="store_true",
                        help="delete everything in --out first when it already holds an aevb run "
                             "(refused while another process is training there)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars; one line per epoch")
    parser.add_argument("--resume", default=None, metavar="RUN_DIR",
                        help="continue RUN_DIR exactly from its last checkpoint with its saved config; only "
                             "train.epochs, quiet, threads, device, eval_every, checkpoint_every, early_stopping, "
                             "max_nan_retries, keep_checkpoints, tensorboard, compile, flush_denormal may change")


def resume_config(args: argparse.Namespace) -> RunConfig:
    """The run's saved config with the allowed changes from the flags applied."""
    from pathlib import Path

    run_dir = Path(args.resume)
    if not (run_dir / "config.json").is_file():
        raise ValueError(f"--resume {run_dir}: no config.json there; give the run directory of an aevb train run")
    if args.preset or args.config or (args.out and Path(args.out) != run_dir):
        raise ValueError("--resume takes the run's own config: drop --preset, --config and --out")
    saved = RunConfig.load(run_dir / "config.json")
    wanted = config_from_args(args, base=RunConfig.load(run_dir / "config.json"))
    changed = [f"{section}.{f.name}" for section in ("data", "model", "objective", "train", "eval")
               for f in fields(getattr(saved, section))
               if getattr(getattr(saved, section), f.name) != getattr(getattr(wanted, section), f.name)
               and (section, f.name) not in RESUMABLE]
    if changed:
        raise ValueError(f"--resume {run_dir}: {', '.join(changed)} cannot change when resuming "
                         f"(allowed: {', '.join(sorted(f'{a}.{b}' for a, b in RESUMABLE))})")
    wanted.out = str(run_dir)
    return wanted


def config_from_args(args: argparse.Namespace, base: RunConfig | None = None) -> RunConfig:
    """defaults (or ``base``) <- preset <- config file <- flags <- --set."""
    cfg = base if base is not None else RunConfig()
    if args.preset:
        update(cfg, read_preset(args.preset), source=f"preset {args.preset}")
    if args.config:
        update(cfg, read_config_file(args.config), source=args.config)
    nested: dict = {}
    for flag, (section, key) in FLAGS.items():
        value = getattr(args, flag.lstrip("-").replace("-", "_"))
        if value is not None:
            nested.setdefault(section, {})[key] = value
    update(cfg, nested, source="flags")
    apply_overrides(cfg, args.overrides)
    if getattr(args, "out", None):
        cfg.out = args.out
    if getattr(args, "quiet", False):
        cfg.train.quiet = True
    return cfg


def interrupted_message(run_dir: str) -> str:
    """What Ctrl-C leaves and the exact command that continues the run (or that there is none yet)."""
    import shlex
    from pathlib import Path

    from aevb.training.checkpoint import list_checkpoints

    found = list_checkpoints(Path(run_dir)) if Path(run_dir).is_dir() else []
    if not found:
        return f"aevb train: interrupted before the first checkpoint of {run_dir}; nothing to resume"
    return (f"aevb train: interrupted; {run_dir} keeps its last checkpoint ({Path(found[-1]).name}). Continue with:\n"
            f"  aevb train --resume {shlex.quote(str(run_dir))}")


def run(args: argparse.Namespace) -> int:
    import sys

    from aevb.training.loop import default_run_dir, train

    if getattr(args, "list_presets", False):
        for name in list_presets():
            print(f"{name:12s} {preset_description(name)}")
        return 0
    if getattr(args, "resume", None):
        if getattr(args, "overwrite", False):
            raise ValueError("--resume continues a run and --overwrite deletes it: give one of them")
        cfg, resume = resume_config(args), True
    else:
        cfg, resume = config_from_args(args), False
        cfg.out = cfg.out or str(default_run_dir())  # known now, so that Ctrl-C can name it
    try:
        train(cfg, resume=resume, overwrite=getattr(args, "overwrite", False) and not resume)
    except KeyboardInterrupt:
        print(interrupted_message(cfg.out), file=sys.stderr)
        return 130
    return 0
