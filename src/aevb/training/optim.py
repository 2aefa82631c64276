"""Optimisers, learning-rate schedules and the parameter prior (weight decay) for the trainer.

Schedules are pure functions of the epoch, so a resumed run needs no scheduler object: the
checkpoint stores the epoch and the NaN guard's ``lr_scale``, and ``learning_rate`` recomputes the
rate. The weight decay is the gradient of a N(0, I) prior on every parameter (see
``add_prior_gradient``).
"""

from __future__ import annotations

import torch

from aevb.speed.optimizer_step import skip_compiler_import, step_optimizer  # noqa: F401 (re-exported)

# Burda, Grosse & Salakhutdinov (2016), section 5: 3^i passes at lr 1e-3 * 10^(-i/7), i = 0..7.
IWAE_STAGES = 8
IWAE_EPOCHS = sum(3 ** i for i in range(IWAE_STAGES))  # 3280 passes over the training set


def iwae_stage(epoch: int, total_epochs: int = IWAE_EPOCHS) -> int:
    """Stage i of the IWAE schedule for a 0-based epoch.

    With ``total_epochs = 3280`` the stages last 1, 3, 9, ..., 2187 epochs, as in Burda et al.;
    a shorter (or longer) run keeps the same stage fractions: epoch e is placed at paper epoch
    floor(e * 3280 / total_epochs).
    """
    epoch = (epoch * IWAE_EPOCHS) // max(total_epochs, 1)
    end = 0
    for i in range(IWAE_STAGES):
        end += 3 ** i
        if epoch < end:
            return i
    return IWAE_STAGES - 1


def learning_rate(train_cfg, epoch: int, lr_scale: float = 1.0) -> float:
    """The learning rate for a 0-based epoch.

    "constant": ``train.lr``. "iwae": ``train.lr * 10^(-i/7)`` in stage i of ``iwae_stage`` over
    ``train.epochs`` epochs (with train.lr = 1e-3 and 3280 epochs this is the paper's schedule).
    ``lr_scale`` is the NaN guard's factor (0.1 per rollback).
    """
    if train_cfg.schedule == "constant":
        factor = 1.0
    elif train_cfg.schedule == "iwae":
        factor = 10.0 ** (-iwae_stage(epoch, train_cfg.epochs) / 7.0)
    else:
        raise ValueError(f"unknown schedule {train_cfg.schedule!r}; allowed: constant, iwae")
    return train_cfg.lr * factor * lr_scale


def build_optimizer(params, train_cfg, device: torch.device | None = None) -> torch.optim.Optimizer:
    """Adam or Adagrad from a ``TrainConfig``.

    Both use torch's fused kernels where they exist (CPU and CUDA in torch >= 2.4): one pass over
    each parameter instead of about a dozen, the same update to float rounding; otherwise the
    multi-tensor (foreach) implementations.
    """
    params = list(params)
    device = device if device is not None else (params[0].device if params else torch.device("cpu"))
    if not getattr(train_cfg, "compile", False):
        skip_compiler_import()  # no torch._dynamo import just to build the optimizer (aevb.speed.optimizer_step)
    if train_cfg.optimizer == "adam":
        if device.type in ("cpu", "cuda"):
            try:
                return torch.optim.Adam(params, lr=train_cfg.lr, eps=train_cfg.adam_eps, fused=True)
            except (RuntimeError, TypeError):  # pragma: no cover - older torch without a fused kernel
                pass
        return torch.optim.Adam(params, lr=train_cfg.lr, eps=train_cfg.adam_eps, foreach=True)
    if train_cfg.optimizer == "adagrad":
        if device.type in ("cpu", "cuda"):
            try:  # fused: 0.3 ms a step on the AEVB MNIST model on one CPU thread, against 2.7 ms for foreach
                return torch.optim.Adagrad(params, lr=train_cfg.lr, fused=True)
            except (RuntimeError, TypeError):  # pragma: no cover - older torch without a fused kernel
                pass
        return torch.optim.Adagrad(params, lr=train_cfg.lr, foreach=True)
    raise ValueError(f"unknown optimizer {train_cfg.optimizer!r}; allowed: adam, adagrad")


def set_learning_rate(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr


@torch.no_grad()
def add_prior_gradient(params: list[torch.Tensor], coefficient: float, num_train: int) -> None:
    """Add the gradient of the parameter prior to each ``.grad``, in place.

    The trainer minimises, per training example,
        loss = -mean_b ELBO(x_b) + coefficient * ||theta||^2 / (2 N),
    the negative log joint of the data and a N(0, I / coefficient) prior on theta divided by the
    number N of training examples (AEVB section 5, "weight decay corresponding to a prior
    p(theta) = N(0, I)" when coefficient = 1). Its gradient adds ``coefficient * theta / N`` to each parameter's gradient.
    """
    if coefficient == 0:
        return
    grads = [p.grad for p in params if p.grad is not None]
    values = [p for p in params if p.grad is not None]
    torch._foreach_add_(grads, values, alpha=coefficient / num_train)


def clip_or_check_gradients(params: list[torch.Tensor], max_norm: float) -> torch.Tensor:
    """A scalar that is finite exactly when every gradient element is; clips when ``max_norm`` > 0.

    With ``max_norm`` > 0: the total 2-norm of all gradients before clipping, and the gradients are
    rescaled to norm ``max_norm`` when larger. Without clipping only finiteness is needed, so the
    cheaper sum of all gradient elements is returned: a NaN or an infinity anywhere makes the sum
    non-finite (inf - inf is NaN); the only false alarm is a sum of finite values above ~3e38.
    """
    if max_norm > 0:
        return torch.nn.utils.clip_grad_norm_(params, max_norm, foreach=True)
    sums = [p.grad.sum() for p in params if p.grad is not None]
    return torch.stack(sums).sum() if sums else torch.zeros(())
