"""Export a trained model's networks for use without aevb: TorchScript (always) or ONNX.

These graphs are written to the output folder:

- ``encoder.{pt,onnx}``: x (B, num_dims) in the scaled units the model was trained on -> the
  parameters of q(z_1|x) named by the family's ``export_outputs`` (diagonal Gaussian: (mu, log_var),
  each (B, D_1): q(z_1|x) = N(mu, diag(exp(log_var)))).
- ``decoder.{pt,onnx}``: z_1 (B, D_1) -> the likelihood's parameters (B, P * num_dims)
  (for bernoulli, P = 1 logits; see ``export.json`` for the likelihood and P).
- ``posterior.{pt,onnx}``: (x (B, num_dims), eps (B, D_1)) -> (z, log_q): the reparameterised draw of
  q(z_1|x) for standard-normal noise eps and its log-density in nats, for every posterior family
  (full covariance, planar and IAF flows included: the graph holds their networks).
- models with L >= 2 stochastic layers add, for l = 1..L-1, ``posterior_{l+1}.{pt,onnx}``:
  z_l -> (mu, log_var) of q(z_{l+1}|z_l), and ``prior_{l}.{pt,onnx}``: z_{l+1} -> (mu, log_var) of
  p(z_l|z_{l+1}); the top prior p(z_L) is named in ``export.json``.

plus ``export.json`` describing inputs, outputs, the likelihood and the data shape. A conditional
is exported through its ``params(input) -> tuple of tensors`` and ``export_outputs`` (their names);
a posterior family without them is refused with a message saying so.
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


class ParamsGraph(nn.Module):
    """input (B, D_in) -> the distribution parameters ``module.params`` returns (``module.export_outputs``)."""

    def __init__(self, module: nn.Module, what: str):
        super().__init__()
        if not hasattr(module, "params") or not hasattr(module, "export_outputs"):
            raise ValueError(f"{what} ({type(module).__name__}) cannot be exported: it has no params()/export_outputs "
                             "naming the tensors that define its distribution")
        self.module = module

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return tuple(self.module.params(x))


class EncoderGraph(ParamsGraph):
    """x (B, num_dims) -> the parameters of q(z_1|x), e.g. (mu, log_var), each (B, D_1)."""

    def __init__(self, model):
        super().__init__(model.encoder, "the posterior q(z_1|x)")
        self.encoder = self.module


class DecoderGraph(nn.Module):
    """z_1 (B, D_1) -> likelihood parameters (B, P * num_dims)."""

    def __init__(self, model):
        super().__init__()
        self.decoder = model.decoder

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.decoder(z)


class PosteriorSampleGraph(nn.Module):
    """(x (B, num_dims), eps (B, D_1)) -> (z (B, D_1), log_q (B,)): the reparameterised draw z of q(z_1|x) for
    standard-normal noise eps and log q(z_1|x) in nats, for every posterior family (flows included: their
    per-example parameters and their networks are inside the graph). See ``posteriors.rsample_and_log_prob``."""

    def __init__(self, model):
        super().__init__()
        self.encoder = model.encoder

    def forward(self, x: torch.Tensor, eps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        from aevb.models.posteriors import rsample_and_log_prob

        return rsample_and_log_prob(self.encoder(x), eps)


def example_inputs(model, info, batch_size: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
    """(x, z) of shapes (batch_size, num_dims) and (batch_size, latent_dim) for tracing."""
    g = torch.Generator().manual_seed(0)
    return torch.rand(batch_size, info.num_dims, generator=g), torch.randn(batch_size, model.latent_dim, generator=g)


def layer_graphs(model) -> list[tuple[str, nn.Module, str, int, int]]:
    """(file stem, graph, input name, input size, output size) of the upper layers of an L-layer model."""
    dims = list(getattr(model, "latent_dims", [model.latent_dim]))
    graphs = []
    for i, layer in enumerate(getattr(model, "posterior_layers", [])):
        graphs.append((f"posterior_{i + 2}", ParamsGraph(layer, f"q(z_{i + 2}|z_{i + 1})").eval(), f"z_{i + 1}",
                       dims[i], dims[i + 1]))
    for i, layer in enumerate(getattr(model, "prior_layers", [])):
        graphs.append((f"prior_{i + 1}", ParamsGraph(layer, f"p(z_{i + 1}|z_{i + 2})").eval(), f"z_{i + 2}",
                       dims[i + 1], dims[i]))
    return graphs


def _torchscript(module: nn.Module, example: torch.Tensor | tuple[torch.Tensor, ...], path: Path) -> None:
    """Trace and save. torch 2.13 marks torch.jit deprecated; TorchScript files still load with
    ``torch.jit.load`` (Python) and ``torch::jit::load`` (C++, LibTorch), which is why it is offered."""
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        traced = torch.jit.trace(module, example, check_trace=False)
    traced.save(str(path))


def _onnx(module: nn.Module, example: torch.Tensor | tuple[torch.Tensor, ...], path: Path, input_name: str | list[str],
          output_names: list[str]) -> None:
    """Export with the batch dimension free; ``example``/``input_name`` may be tuples/lists for several inputs."""
    examples = example if isinstance(example, tuple) else (example,)
    input_names = input_name if isinstance(input_name, list) else [input_name]
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
            warnings.filterwarnings("ignore", "The axis name: batch will not be used", UserWarning)  # x, eps share it
            torch.onnx.export(module, examples, str(path), input_names=input_names, output_names=output_names,
                              dynamic_shapes=tuple({0: batch} for _ in examples), dynamo=True, external_data=False,
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
    names = list(model.encoder.export_outputs)
    if fmt == "torchscript":
        _torchscript(encoder, x, paths["encoder"])
        _torchscript(decoder, z, paths["decoder"])
    else:
        _onnx(encoder, x, paths["encoder"], "x", names)
        _onnx(decoder, z, paths["decoder"], "z", ["params"])
    layers = {}
    g = torch.Generator().manual_seed(1)
    for stem, graph, input_name, in_dim, out_dim in layer_graphs(model):
        path, example = out_dir / f"{stem}.{suffix}", torch.randn(2, in_dim, generator=g)
        outputs = list(graph.module.export_outputs)
        if fmt == "torchscript":
            _torchscript(graph, example, path)
        else:
            _onnx(graph, example, path, input_name, outputs)
        layers[stem] = {"file": path.name, "input": {input_name: ["B", in_dim]},
                        "outputs": {name: ["B", out_dim] for name in outputs}}
    paths["posterior"] = out_dir / f"posterior.{suffix}"
    sampler, eps = PosteriorSampleGraph(model).eval(), torch.randn(len(x), model.latent_dim, generator=g)
    if fmt == "torchscript":
        _torchscript(sampler, (x, eps), paths["posterior"])
    else:
        _onnx(sampler, (x, eps), paths["posterior"], ["x", "eps"], ["z", "log_q"])
    likelihood = model.likelihood_module
    with torch.no_grad():
        prior = type(model.prior()).__name__
        encoder_shapes = [list(t.shape[1:]) for t in encoder(x)]
    manifest = {
        "format": fmt,
        "latent_dims": list(getattr(model, "latent_dims", [model.latent_dim])), "prior": prior,
        "encoder": {"file": paths["encoder"].name, "input": {"x": ["B", info.num_dims]},
                    "outputs": {name: ["B", *shape] for name, shape in zip(names, encoder_shapes)}},
        "posterior": {"file": paths["posterior"].name, "family": type(model.encoder.family).__name__
                      if hasattr(model.encoder, "family") else type(model.encoder).__name__,
                      "input": {"x": ["B", info.num_dims], "eps": ["B", model.latent_dim]},
                      "outputs": {"z": ["B", model.latent_dim], "log_q": ["B"]}},
        "decoder": {"file": paths["decoder"].name, "input": {"z": ["B", model.latent_dim]},
                    "outputs": {"params": ["B", likelihood.params_per_dim * info.num_dims]}},
        "likelihood": type(likelihood).__name__, "params_per_dim": likelihood.params_per_dim,
        "p_x_given_z": likelihood.describe(),
        "data_shape": list(info.shape), "support": info.support,
        **({"layers": layers} if layers else {}),
    }
    (out_dir / "export.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest
