"""Export a trained model's networks for use without aevb: TorchScript (always) or ONNX.

Two graphs are written to the output folder:

- ``encoder.{pt,onnx}``: x (B, num_dims) in the scaled units the model was trained on ->
  (mu, log_var), each (B, latent_dim): q(z|x) = N(mu, diag(exp(log_var))).
- ``decoder.{pt,onnx}``: z (B, latent_dim) -> the likelihood's parameters (B, P * num_dims)
  (for bernoulli, P = 1 logits; see ``export.json`` for the likelihood and P).

plus ``export.json`` describing inputs, outputs, the likelihood and the data shape.
ONNX needs the optional extra ``pip install 'aevb[onnx]'`` (onnx, onnxscript; onnxruntime to run).
"""

from __future__ import annotations

import json
import logging
import warnings
from pathlib import Path

import torch
from torch import nn

FORMATS = ("torchscript", "onnx")


class EncoderGraph(nn.Module):
    """x (B, num_dims) -> (mu, log_var), each (B, latent_dim), from the model's q(z|x)."""

    def __init__(self, model):
        super().__init__()
        self.encoder = model.encoder

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        q_z = self.encoder(x)
        return q_z.mean, torch.log(q_z.variance)


class DecoderGraph(nn.Module):
    """z (B, latent_dim) -> likelihood parameters (B, P * num_dims)."""

    def __init__(self, model):
        super().__init__()
        self.decoder = model.decoder

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.decoder(z)


def example_inputs(model, info, batch_size: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
    """(x, z) of shapes (batch_size, num_dims) and (batch_size, latent_dim) for tracing."""
    g = torch.Generator().manual_seed(0)
    return torch.rand(batch_size, info.num_dims, generator=g), torch.randn(batch_size, model.latent_dim, generator=g)


def _torchscript(module: nn.Module, example: torch.Tensor, path: Path) -> None:
    """Trace and save. torch 2.13 marks torch.jit deprecated; TorchScript files still load with
    ``torch.jit.load`` (Python) and ``torch::jit::load`` (C++, LibTorch), which is why it is offered."""
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        traced = torch.jit.trace(module, example, check_trace=False)
    traced.save(str(path))


def _onnx(module: nn.Module, example: torch.Tensor, path: Path, input_name: str, output_names: list[str]) -> None:
    try:
        import onnx  # noqa: F401
        import onnxscript  # noqa: F401
    except ImportError as e:
        raise RuntimeError(f"--format onnx needs the optional extra: pip install 'aevb[onnx]' ({e})") from None
    batch = torch.export.Dim("batch", min=1)
    quiet = logging.getLogger("torch.onnx")
    level = quiet.level
    quiet.setLevel(logging.ERROR)  # "torchvision is not installed" notes are not about this model
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            torch.onnx.export(module, (example,), str(path), input_names=[input_name], output_names=output_names,
                              dynamic_shapes={input_name: {0: batch}}, dynamo=True, external_data=False,
                              verbose=False)
    finally:
        quiet.setLevel(level)


def export_model(model, info, out_dir: str | Path, fmt: str = "torchscript") -> dict:
    """Write encoder and decoder graphs of ``model`` (a ``VAE``) in format ``fmt`` to ``out_dir``.

    Args:
        model: a ``VAE`` (put in eval mode here).
        info: the ``DataInfo`` of its training data.
        out_dir: folder to write (created if missing).
        fmt: "torchscript" or "onnx".

    Returns:
        The manifest written to ``out_dir/export.json`` (paths, shapes, likelihood).
    """
    if getattr(model, "conditional", False):
        raise ValueError("export of a conditional model (model.conditional = true) is not supported yet: its encoder "
                         "takes [x, onehot(y)] and its decoder [z, onehot(y)]; export an unconditional run")
    if fmt not in FORMATS:
        raise ValueError(f"unknown export format {fmt!r}; allowed: {', '.join(FORMATS)}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    model = model.cpu().eval()
    x, z = example_inputs(model, info)
    encoder, decoder = EncoderGraph(model).eval(), DecoderGraph(model).eval()
    suffix = "pt" if fmt == "torchscript" else "onnx"
    paths = {"encoder": out_dir / f"encoder.{suffix}", "decoder": out_dir / f"decoder.{suffix}"}
    if fmt == "torchscript":
        _torchscript(encoder, x, paths["encoder"])
        _torchscript(decoder, z, paths["decoder"])
    else:
        _onnx(encoder, x, paths["encoder"], "x", ["mu", "log_var"])
        _onnx(decoder, z, paths["decoder"], "z", ["params"])
    likelihood = model.likelihood_module
    manifest = {
        "format": fmt,
        "encoder": {"file": paths["encoder"].name, "input": {"x": ["B", info.num_dims]},
                    "outputs": {"mu": ["B", model.latent_dim], "log_var": ["B", model.latent_dim]}},
        "decoder": {"file": paths["decoder"].name, "input": {"z": ["B", model.latent_dim]},
                    "outputs": {"params": ["B", likelihood.params_per_dim * info.num_dims]}},
        "likelihood": type(likelihood).__name__, "params_per_dim": likelihood.params_per_dim,
        "p_x_given_z": likelihood.describe(),
        "data_shape": list(info.shape), "support": info.support,
    }
    (out_dir / "export.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest
