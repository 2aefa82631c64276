"""Optimisers, learning-rate schedules and the parameter prior (weight decay) for the trainer.

Schedules are pure functions of the epoch, so a resumed run needs no scheduler object: the
checkpoint stores the epoch and the NaN guard's ``lr_scale``, and ``learning_rate`` recomputes the
rate. The weight decay is the gradient of a N(0, I) prior on every parameter (see
``add_prior_gradient``).
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.optim.optimizer as _torch_optimizer

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


def step_optimizer(optimizer: torch.optim.Optimizer) -> None:
    """``optimizer.step()``; for fused CPU Adam and Adagrad, the same update called straight into the kernel.

    It does what ``Adam(fused=True).step()`` / ``Adagrad(fused=True).step()`` do for one parameter
    group with plain settings (increment each ``step`` count, then one ``torch._fused_adam_`` /
    ``torch._fused_adagrad_`` call over all parameters with gradients) without torch.optim's
    per-call Python (about 0.2 ms a step on the AEVB MNIST model), and it hands the kernel each
    parameter, gradient and state tensor as contiguous views: given a column-major weight (the
    fast path's sparse first layer) the kernels would otherwise copy it twice per step. Anything
    else (other optimizers, hooks, amsgrad, maximize, a first Adam step that creates the state)
    calls ``optimizer.step()``. Either way, state tensors are first given their parameter's strides
    (``match_state_layout``; the direct call does the same in its one pass over the parameters).
    tests/test_speed_equivalence.py checks that both give the same bits.
    """
    direct = _DIRECT_STEPS.get(type(optimizer))
    lists = _fused_lists(optimizer, direct[0]) if direct else None
    if lists is None or direct is None:
        match_state_layout(optimizer)
        optimizer.step()
        return
    torch._foreach_add_(lists[-1], 1)
    direct[1](optimizer.param_groups[0], *lists)


def match_state_layout(optimizer: torch.optim.Optimizer) -> None:
    """Give every per-parameter state tensor of the parameter's shape the parameter's strides.

    Torch's fused kernels read a parameter, its gradient and its state in one element order, so a
    column-major weight (the fast path's sparse first layer) with contiguous moments (as read back
    from a checkpoint, or restored by the NaN guard) would silently get wrong updates.
    """
    for group in optimizer.param_groups:
        for p in group["params"]:
            state = optimizer.state.get(p)
            for key, value in (state or {}).items():
                if torch.is_tensor(value) and value.shape == p.shape and value.stride() != p.stride():
                    state[key] = _laid_out_like(p, value)


def _laid_out_like(p: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
    """A copy of ``value`` with the strides of ``p`` (same shape)."""
    return torch.empty_like(p).copy_(value)


def _fused_adam(group: dict, params, grads, exp_avgs, exp_avg_sqs, steps) -> None:
    beta1, beta2 = group["betas"]
    torch._fused_adam_(params, grads, exp_avgs, exp_avg_sqs, [], steps, amsgrad=False, lr=group["lr"],
                       beta1=beta1, beta2=beta2, weight_decay=group["weight_decay"], eps=group["eps"],
                       maximize=False, grad_scale=None, found_inf=None)


def _fused_adagrad(group: dict, params, grads, sums, steps) -> None:
    torch._fused_adagrad_(params, grads, sums, steps, lr=group["lr"], lr_decay=group["lr_decay"],
                          weight_decay=group["weight_decay"], eps=group["eps"], maximize=False,
                          grad_scale=None, found_inf=None)


# optimizer class -> (its per-parameter state tensors, the direct fused call)
_DIRECT_STEPS: dict[type, tuple[tuple[str, ...], Callable]] = {
    torch.optim.Adam: (("exp_avg", "exp_avg_sq"), _fused_adam),
    torch.optim.Adagrad: (("sum",), _fused_adagrad),
}


def _fused_lists(optimizer, state_keys: tuple[str, ...]) -> list[list[torch.Tensor]] | None:
    """[params, grads, *state tensors, steps] for ``step_optimizer``'s direct call, or None when it does not apply.

    One pass over the parameters (this runs every step, so it avoids repeated attribute calls): each
    state tensor is first given its parameter's strides where it lacks them (as ``match_state_layout``
    does), and a column-major 2-D parameter is handed over with its gradient and state as transposed,
    contiguous views.
    """
    if len(optimizer.param_groups) != 1:
        return None
    group = optimizer.param_groups[0]
    plain = (group.get("fused") and not group.get("amsgrad") and not group.get("maximize")
             and not group.get("differentiable") and not group.get("capturable")
             and not group.get("decoupled_weight_decay", False) and not torch.is_tensor(group["lr"]))
    hooks = (optimizer._optimizer_step_pre_hooks or optimizer._optimizer_step_post_hooks
             or _torch_optimizer._global_optimizer_pre_hooks or _torch_optimizer._global_optimizer_post_hooks)
    if not plain or hooks:
        return None
    lists: list[list[torch.Tensor]] = [[] for _ in range(3 + len(state_keys))]
    dtype, all_state = None, optimizer.state
    for p in group["params"]:
        grad = p.grad
        if grad is None:
            continue
        state = all_state.get(p)
        step = state.get("step") if state else None
        if step is None or not torch.is_tensor(step) or not p.is_cpu or grad.is_sparse:
            return None
        dtype = dtype or p.dtype
        stride = p.stride()
        if p.dtype != dtype or grad.stride() != stride:
            return None
        tensors = [p, grad]
        for key in state_keys:
            value = state.get(key)
            if value is None or value.shape != p.shape:
                return None
            if value.stride() != stride:  # e.g. contiguous moments read back for the column-major weight
                value = state[key] = _laid_out_like(p, value)
            tensors.append(value)
        if not p.is_contiguous():
            if p.dim() != 2 or not p.t().is_contiguous():
                return None
            tensors = [t.t() for t in tensors]  # same strides, so all of them are contiguous transposed
        for out, t in zip(lists, tensors):
            out.append(t)
        lists[-1].append(step)
    return lists if lists[0] else None
