"""Export a trained run's encoder (x -> mu, log_var) and decoder (z -> likelihood parameters).

TorchScript always works; ONNX needs the optional extra: pip install 'aevb[onnx]'.
Writes encoder.pt/decoder.pt (or .onnx) and export.json (shapes, likelihood) to --out
(default: RUN_DIR/export/FORMAT).
"""

from __future__ import annotations

import argparse
from pathlib import Path

HELP = "export the encoder and decoder to TorchScript or ONNX"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from aevb.outputs.export import FORMATS

    parser.add_argument("run_dir", metavar="RUN_DIR", help="a run directory written by `aevb train`")
    parser.add_argument("--format", default="torchscript", choices=FORMATS,
                        help="torchscript (always available) or onnx (needs aevb[onnx]) (default: torchscript)")
    parser.add_argument("--out", default=None, metavar="DIR", help="output folder (default: RUN_DIR/export/FORMAT)")
    parser.add_argument("--checkpoint", default="last", metavar="WHICH",
                        help="last, best or step-N (default: last)")


def run(args: argparse.Namespace) -> int:
    from aevb.outputs.export import export_model
    from aevb.training.checkpoint import load_run

    _, model, info = load_run(args.run_dir, which=args.checkpoint)
    out = Path(args.out) if args.out else Path(args.run_dir) / "export" / args.format
    manifest = export_model(model, info, out, args.format)
    print(f"encoder: {out / manifest['encoder']['file']}  (x {manifest['encoder']['input']['x']} -> "
          f"{', '.join(manifest['encoder']['outputs'])})")
    print(f"posterior: {out / manifest['posterior']['file']}  (x, eps {manifest['posterior']['input']['eps']} -> z, log_q: "
          f"a draw of q(z|x) and its log-density)")
    print(f"decoder: {out / manifest['decoder']['file']}  (z {manifest['decoder']['input']['z']} -> "
          f"{manifest['likelihood']} parameters {manifest['decoder']['outputs']['params']})")
    for stem, layer in manifest.get("layers", {}).items():
        (name, shape), = layer["input"].items()
        print(f"{stem}: {out / layer['file']}  ({name} {shape} -> {', '.join(layer['outputs'])})")
    return 0
