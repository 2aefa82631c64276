"""One optimizer step of the trainer, with its noise drawn explicitly and its NaN/inf checks.

Every random draw of a step comes from the trainer's noise generator, for the *global* batch:
the binarization uniforms u (B, num_dims) and the standard-normal noise eps (L, B, noise_dim).
Each rank keeps its rows. One process with batch B and W processes with B/W rows each therefore
see the same binarized pixels and the same z for every example, and the run does not depend on
the number of processes (ranks still draw independent noise: they keep different rows).

The bound itself is the shared objective (``objectives.OBJECTIVES``), given eps as its noise: the
model turns eps into z ~ q(z|x) layer by layer (``aevb.models.base``, the model contract), so any
model family gets the same rank-independent, exactly resumable noise.
"""

from __future__ import annotations

import torch
from torch import nn

from aevb.inference.objectives import OBJECTIVES
from aevb.training.optim import add_prior_gradient, clip_or_check_gradients, step_optimizer


class BoundModule(nn.Module):
    """x (B, num_dims), eps (L, B, noise_dim), beta -> (bound, recon, kl), each (B,) in nats.

    The module DistributedDataParallel wraps (DDP synchronises gradients through ``forward``).
    """

    def __init__(self, model: nn.Module, objective_cfg):
        super().__init__()
        self.model = model
        self.objective = OBJECTIVES[objective_cfg.name]
        self.num_samples, self.kl = objective_cfg.num_samples, objective_cfg.kl

    def forward(self, x: torch.Tensor, eps: torch.Tensor, beta: float, labels: torch.Tensor | None = None):
        model = self.model.given(labels) if labels is not None else self.model  # conditional: labels bound
        b = self.objective(model, x, num_samples=self.num_samples, kl=self.kl, beta=beta, noise=eps)
        return b.value, b.recon, b.kl


def draw_batch(x_train: torch.Tensor, idx: torch.Tensor, rows: slice, binarization: str, num_samples: int,
               noise_dim: int, noise: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """This rank's rows of the global batch ``idx``, binarized, and their z noise.

    Returns:
        x (b, num_dims) and eps (L, b, noise_dim) for the b = len(rows) local examples
        (``noise_dim`` = the model's ``noise_dim``, the sum of its layers' sizes).
    """
    x = torch.index_select(x_train, 0, idx[rows])
    if binarization == "dynamic":  # x_bin ~ Bernoulli(x): 1 where u < x, u ~ U[0, 1)
        u = torch.rand(len(idx), x_train.shape[1], generator=noise, device=x_train.device)
        x = torch.lt(u[rows], x, out=x)  # in place: x is index_select's fresh copy, in x_train's dtype
    eps = torch.randn(num_samples, len(idx), noise_dim, generator=noise, device=x_train.device)
    return x, eps[:, rows]


def describe_nonfinite(value: torch.Tensor, recon: torch.Tensor, kl: torch.Tensor, examples: torch.Tensor) -> str:
    """Which term went bad and for which training examples (dataset indices)."""
    parts = []
    for name, term in (("reconstruction term E_q[log p(x|z)]", recon), ("KL term", kl), ("bound", value)):
        bad = ~torch.isfinite(term.detach())
        if bad.any():
            where = examples.cpu()[bad.cpu()].tolist() if examples.numel() == bad.numel() else []
            parts.append(f"{name} is non-finite for {int(bad.sum())} example(s) (training-set indices "
                         f"{where[:8]}{' ...' if len(where) > 8 else ''})")
    return "; ".join(parts[:2]) if parts else "the bound is non-finite on another rank"


def first_bad_gradient(model: nn.Module) -> str:
    for name, p in model.named_parameters():
        if p.grad is not None and not bool(torch.isfinite(p.grad).all()):
            return name
    return "?"


def optimizer_step(module: nn.Module, model: nn.Module, optimizer, params: list, x: torch.Tensor,
                   eps: torch.Tensor, beta: float, examples: torch.Tensor, global_count: int, world_size: int,
                   train_cfg, num_train: int, any_rank,
                   labels: torch.Tensor | None = None) -> tuple[torch.Tensor | None, str]:
    """Forward, check, backward, prior gradient, clip, check, step.

    The local loss is -sum(bound) * W / B_global so that DDP's average of the W ranks' gradients
    is the gradient of -mean(bound) over the global batch (exact for uneven shares too).

    Returns:
        (sums, "") with sums = [sum bound, sum recon, sum KL, examples] of the local rows, or
        (None, why) when the bound or the gradient is non-finite; then no step was taken and
        ``why`` names the term and the training examples (``examples``: their dataset indices).
    """
    value, recon, kl = module(x, eps, beta) if labels is None else module(x, eps, beta, labels)
    if any_rank(not bool(torch.isfinite(value).all())):
        return None, describe_nonfinite(value, recon, kl, examples)
    loss = -value.sum() * (world_size / global_count)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    add_prior_gradient(params, train_cfg.weight_decay, num_train)
    check = clip_or_check_gradients(params, train_cfg.grad_clip)
    if not bool(torch.isfinite(check)):
        return None, f"the bound is finite but the gradient of {first_bad_gradient(model)} is not"
    step_optimizer(optimizer)
    with torch.no_grad():
        sums = torch.stack([value.sum(), recon.sum(), kl.sum(), value.new_tensor(float(len(value)))])
    return sums.double(), ""
