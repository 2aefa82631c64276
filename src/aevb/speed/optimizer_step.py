"""Adam and Adagrad steps straight into torch's fused CPU kernels, without torch.optim's per-call Python.

``step_optimizer(optimizer)`` does what ``Adam(fused=True).step()`` / ``Adagrad(fused=True).step()``
do for one parameter group with plain settings: create the state on the first step (zero moments,
a float32 step count), increment each ``step`` count, then one ``torch._fused_adam_`` /
``torch._fused_adagrad_`` call over all parameters with gradients. Anything else (other
optimizers, hooks, amsgrad, maximize, several groups) calls ``optimizer.step()``.
tests/test_speed_equivalence.py checks that both give the same bits, state included.

``skip_compiler_import()``: torch wraps ``Optimizer.add_param_group``, ``state_dict``,
``load_state_dict`` and ``zero_grad`` in ``torch._disable_dynamo``, whose first call imports
``torch._dynamo`` (and with it torch's compiler stack: about 1.8 s of a run's start on this
project's machine) only to mark the method as not to be compiled. The wrapper first looks for
an already disabled version cached on the wrapped function; caching the function itself there
makes each call the plain method. The trainer does this only when it does not compile (it never
calls an optimizer method inside a compiled region), and only while ``torch._dynamo`` is not
imported yet.
"""

from __future__ import annotations

import sys
from typing import Callable

import torch
import torch.optim.optimizer as _torch_optimizer

_DYNAMO_WRAPPED = ("add_param_group", "state_dict", "load_state_dict", "zero_grad")
_CACHE = "__dynamo_disable"  # the attribute torch._compile._disable_dynamo caches its disabled function in


def skip_compiler_import() -> bool:
    """Let torch.optim.Optimizer's methods run without importing torch._dynamo; True if they now do."""
    if "torch._dynamo" in sys.modules:
        return False
    done = True
    for name in _DYNAMO_WRAPPED:
        fn = getattr(getattr(torch.optim.Optimizer, name), "__wrapped__", None)
        if fn is None:  # pragma: no cover - a torch whose wrapper works differently: leave it alone
            done = False
            continue
        if getattr(fn, _CACHE, None) is None:
            setattr(fn, _CACHE, fn)
    return done


def step_optimizer(optimizer: torch.optim.Optimizer) -> None:
    """``optimizer.step()``; for fused CPU Adam and Adagrad, the same update called straight into the kernel."""
    direct = _DIRECT_STEPS.get(type(optimizer))
    lists = _fused_lists(optimizer, direct[0], direct[2]) if direct is not None else None
    if lists is None or direct is None:
        optimizer.step()
        return
    torch._foreach_add_(lists[-1], 1)
    direct[1](optimizer.param_groups[0], *lists)


def _fused_adam(group: dict, params, grads, exp_avgs, exp_avg_sqs, steps) -> None:
    beta1, beta2 = group["betas"]
    torch._fused_adam_(params, grads, exp_avgs, exp_avg_sqs, [], steps, amsgrad=False, lr=group["lr"],
                       beta1=beta1, beta2=beta2, weight_decay=group["weight_decay"], eps=group["eps"],
                       maximize=False, grad_scale=None, found_inf=None)


def _fused_adagrad(group: dict, params, grads, sums, steps) -> None:
    torch._fused_adagrad_(params, grads, sums, steps, lr=group["lr"], lr_decay=group["lr_decay"],
                          weight_decay=group["weight_decay"], eps=group["eps"], maximize=False,
                          grad_scale=None, found_inf=None)


def _new_adam_state(p: torch.Tensor) -> dict:
    """Fused Adam's state before its first step (torch.optim.Adam._init_group with fused=True)."""
    return {"step": torch.zeros((), dtype=torch.float32, device=p.device),
            "exp_avg": torch.zeros_like(p, memory_format=torch.preserve_format),
            "exp_avg_sq": torch.zeros_like(p, memory_format=torch.preserve_format)}


# optimizer class -> (its per-parameter state tensors, the direct fused call, the initial state or None)
_DIRECT_STEPS: dict[type, tuple[tuple[str, ...], Callable, Callable | None]] = {
    torch.optim.Adam: (("exp_avg", "exp_avg_sq"), _fused_adam, _new_adam_state),
    torch.optim.Adagrad: (("sum",), _fused_adagrad, None),  # Adagrad creates its state in __init__
}


def _fused_lists(optimizer, state_keys: tuple[str, ...], new_state) -> list[list[torch.Tensor]] | None:
    """[params, grads, *state tensors, steps] for ``step_optimizer``'s direct call, or None when it does not apply.

    One pass over the parameters (this runs every step, so it avoids repeated attribute calls)."""
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
        if not state and new_state is not None and p.is_cpu and p.dtype in (torch.float32, torch.float64):
            state = all_state[p] = new_state(p)
        step = state.get("step") if state else None
        if step is None or not torch.is_tensor(step) or not p.is_cpu or grad.is_sparse:
            return None
        dtype = dtype or p.dtype
        stride = p.stride()
        if p.dtype != dtype or grad.stride() != stride or not p.is_contiguous():
            return None
        tensors = [p, grad]
        for key in state_keys:
            value = state.get(key)
            if value is None or value.stride() != stride:
                return None
            tensors.append(value)
        for out, t in zip(lists, tensors):
            out.append(t)
        lists[-1].append(step)
    return lists if lists[0] else None
