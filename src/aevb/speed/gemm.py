"""Matrix products of the fast path, the evaluator and ``nets.MLP``, on the fastest exact float32 kernel.

torch's CPU ``mm``/``addmm`` call MKL's sgemm. On AMD processors MKL takes a generic code path:
on this project's AMD EPYC (AVX-512) it ran the AEVB MNIST model's products at 82-88 GFLOP/s on
one thread, while oneDNN (which chooses its kernels by the instruction sets the CPU reports, and
ships in every x86 build of torch) ran the same float32 products at 160-195 GFLOP/s. Both
accumulate in float32; they differ only in the order of the additions (float rounding, about 1e-6
relative; tests/test_gemm.py compares both with float64 products).

The backend is chosen once per process:
    ``AEVB_MATMUL=onednn`` (the default on x86-64 where torch's oneDNN linear op exists and oneDNN
    is enabled),
    ``AEVB_MATMUL=torch`` (torch's own ``mm``/``addmm``: MKL, OpenBLAS or whatever torch was built with).
``set_backend`` changes it in-process, ``using`` for a block (tests and benchmarks do). Only float32 CPU tensors go to oneDNN; anything
else (float64, other devices) goes to torch. torch's float32 precision settings are respected:
when ``torch.backends.mkldnn`` is told it may compute float32 products in bf16 or tf32, the torch
backend is used, so that aevb never lowers precision on its own.

Functions:
    linear(x, weight, bias, activation)  act(x W^T + b), as ``nn.Linear`` (weight (out, in))
    matmul(a, b)                         a @ b, 2-D (a or b may be transposed views)
    linear_module_forward(x, W, b, act)  the same for x (..., in), differentiable (``nets.MLP``)
    onednn_linear(x, W, b, act)          ``linear`` on oneDNN without checks (the fast path's inner loop)
"""

from __future__ import annotations

import contextlib
import os
import platform

import torch

BACKENDS = ("onednn", "torch")
# activations oneDNN applies inside the product (its "post-ops"); others are applied by the caller
FUSED_ACTIVATIONS = ("tanh", "relu", "sigmoid")

_state: dict[str, str | None] = {"backend": None}


def _onednn_available() -> bool:
    if platform.machine().lower() not in ("x86_64", "amd64"):  # measured on x86 only: elsewhere torch's own BLAS
        return False
    try:
        op = torch.ops.mkldnn._linear_pointwise
    except (AttributeError, RuntimeError):
        return False
    if not (torch.backends.mkldnn.is_available() and torch.backends.mkldnn.enabled):
        return False
    precision = getattr(getattr(torch.backends.mkldnn, "matmul", None), "fp32_precision", "ieee")
    if precision not in ("ieee", "none", None):  # the user allowed reduced precision: do not route around it
        return False
    try:  # a tiny product, checked against torch's: the op exists and computes what we expect
        a, w, b = torch.ones(2, 3), torch.full((4, 3), 0.5), torch.arange(4.0)
        return bool(torch.equal(op(a, w, b, "none", [], ""), torch.addmm(b, a, w.t())))
    except (RuntimeError, TypeError):
        return False


def backend() -> str:
    """The backend of this process: ``AEVB_MATMUL`` if set, else "onednn" where available, else "torch"."""
    if _state["backend"] is None:
        if capturing():  # no probe inside a traced graph; the next call outside decides
            return "torch"
        wanted = os.environ.get("AEVB_MATMUL", "").strip().lower() or "auto"
        if wanted not in (*BACKENDS, "auto"):
            raise ValueError(f"AEVB_MATMUL={wanted!r} is not a matrix-product backend; allowed: auto, "
                             + ", ".join(BACKENDS))
        _state["backend"] = "onednn" if wanted in ("auto", "onednn") and _onednn_available() else "torch"
    return _state["backend"]  # type: ignore[return-value]  # set just above


def set_backend(name: str | None) -> str:
    """Use ``name`` ("onednn", "torch") from now on; None re-reads ``AEVB_MATMUL``. Returns the previous one.

    "onednn" falls back to "torch" where oneDNN's op is not available."""
    previous = backend()
    if name is not None and name not in BACKENDS:
        raise ValueError(f"unknown matrix-product backend {name!r}; allowed: {', '.join(BACKENDS)}")
    _state["backend"] = None if name is None else ("onednn" if name == "onednn" and _onednn_available() else "torch")
    return previous


@contextlib.contextmanager
def using(name: str):
    """``set_backend(name)`` for the block, then the previous backend again; yields the backend in use."""
    previous = set_backend(name)
    try:
        yield backend()
    finally:
        set_backend(previous)


def uses_onednn(x: torch.Tensor) -> bool:
    """Whether products with this operand go to oneDNN (non-empty float32 on the CPU, backend "onednn")."""
    return x.dtype == torch.float32 and x.device.type == "cpu" and x.numel() > 0 and backend() == "onednn"


def onednn_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                  activation: str | None) -> torch.Tensor:
    """act(x W^T + b) by oneDNN for 2-D float32 CPU x, no checks (the caller asked ``uses_onednn`` once)."""
    return torch.ops.mkldnn._linear_pointwise(x, weight, bias, activation or "none", [], "")


_onednn_linear = onednn_linear


def linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None,
           activation: str | None = None) -> torch.Tensor:
    """act(x W^T + b) for x (B, in), weight (out, in), bias (out,): a new (B, out) tensor.

    ``activation``: None, "tanh", "relu" or "sigmoid" (applied inside oneDNN's product)."""
    if activation is not None and activation not in FUSED_ACTIVATIONS:
        raise ValueError(f"unknown activation {activation!r}; allowed: {', '.join(FUSED_ACTIVATIONS)}")
    if uses_onednn(x):
        return _onednn_linear(x, weight, bias, activation)
    y = torch.mm(x, weight.t()) if bias is None else torch.addmm(bias, x, weight.t())
    return y if activation is None else getattr(torch, activation + "_")(y)


def matmul(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """a @ b for a (M, K) and b (K, N): a new (M, N) tensor (contiguous)."""
    if uses_onednn(a):
        return _onednn_linear(a, b.t(), None, None)
    return torch.mm(a, b)


_ACTIVATION_BACKWARD = {
    "tanh": lambda grad, y: torch.ops.aten.tanh_backward(grad, y),  # grad * (1 - y^2)
    "sigmoid": lambda grad, y: torch.ops.aten.sigmoid_backward(grad, y),  # grad * y (1 - y)
    "relu": lambda grad, y: torch.ops.aten.threshold_backward(grad, y, 0.0),  # grad * (y > 0)
}


class _LinearFunction(torch.autograd.Function):
    """act(x W^T + b) on oneDNN with its gradients on oneDNN too:
    d/dx = g W, d/dW = g^T x, d/db = sum_rows g, where g = grad * act'(a) (act' from the output y)."""

    @staticmethod
    def forward(ctx, x, weight, bias, activation):
        y = _onednn_linear(x, weight, bias, activation)
        ctx.activation, ctx.has_bias = activation, bias is not None
        ctx.save_for_backward(x, weight, y if activation else None)
        return y

    @staticmethod
    def backward(ctx, grad):
        x, weight, y = ctx.saved_tensors
        if ctx.activation:
            grad = _ACTIVATION_BACKWARD[ctx.activation](grad, y)
        grad_x = matmul(grad, weight) if ctx.needs_input_grad[0] else None
        grad_w = matmul(grad.t(), x) if ctx.needs_input_grad[1] else None
        grad_b = grad.sum(0) if ctx.has_bias and ctx.needs_input_grad[2] else None
        return grad_x, grad_w, grad_b, None


def capturing() -> bool:
    """Inside TorchScript, tracing, torch.compile/export or ONNX export: keep torch's own ops in the graph."""
    return (torch.jit.is_scripting() or torch.jit.is_tracing() or torch.compiler.is_compiling()
            or torch.onnx.is_in_onnx_export())


def linear_module_forward(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                          activation: str | None = None) -> torch.Tensor:
    """act(x W^T + b) for x (..., in), differentiable, as ``nn.Linear`` then the activation would compute it.

    On the oneDNN backend (float32 CPU tensors, outside graph capture) the product, the activation
    and, under autograd, the backward products run on oneDNN; otherwise ``torch.nn.functional.linear``
    and torch's activation."""
    if capturing() or not uses_onednn(x):
        y = torch.nn.functional.linear(x, weight, bias)
        return y if activation is None else getattr(torch, activation)(y)
    lead = x.shape[:-1]
    flat = x.reshape(-1, x.shape[-1])
    if torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad
                                    or (bias is not None and bias.requires_grad)):
        y = _LinearFunction.apply(flat, weight, bias, activation)
    else:
        y = _onednn_linear(flat, weight, bias, activation)
    return y.reshape(*lead, y.shape[-1])
