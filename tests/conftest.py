"""Shared test fixtures: one torch thread, tiny configs, paths to ../shared/data."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

torch.set_num_threads(1)

REPO = Path(__file__).resolve().parents[1]
# $AEVB_SHARED_DATA, else the first shared/data beside the checkout or one of its parents (as benchmarks/_recipes.py)
SHARED_DATA = Path(os.environ.get("AEVB_SHARED_DATA") or next(
    (p / "shared" / "data" for p in REPO.parents if (p / "shared" / "data").is_dir()), REPO.parent / "shared" / "data"))


def tiny_config(tmp_path, **sections):
    """A RunConfig on scikit-learn's digits that trains in about a second."""
    from aevb.config import RunConfig, update

    cfg = RunConfig()
    update(cfg, {"data": {"name": "digits"},
                 "model": {"latent_dim": 4, "hidden": [32]},
                 "train": {"epochs": 2, "batch_size": 50, "quiet": True, "lr": 3e-3},
                 "eval": {"k": 20}})
    update(cfg, sections)
    cfg.out = str(tmp_path / "run")
    return cfg


def run_cli(*args, cwd=None, timeout=300, env_extra=None):
    """Run ``python -m aevb ARGS`` in a subprocess using this checkout's sources."""
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO / "src") + os.pathsep + env.get("PYTHONPATH", "")
    env.setdefault("OMP_NUM_THREADS", "1")
    env["MPLBACKEND"] = "Agg"
    if env_extra:
        env.update(env_extra)
    return subprocess.run([sys.executable, "-m", "aevb", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, timeout=timeout, env=env)


@pytest.fixture
def shared_data():
    if not SHARED_DATA.is_dir():
        pytest.skip("../shared/data is absent")
    return SHARED_DATA


@pytest.fixture(params=["onednn", "torch"])
def matmul_backend(request):
    """Run the test with each matrix-product backend of ``aevb.speed.gemm`` (oneDNN skipped where torch lacks it)."""
    from aevb.speed import gemm

    with gemm.using(request.param) as used:
        if used != request.param:
            pytest.skip(f"the {request.param} backend is not available in this torch build")
        yield request.param


def autograd_reference(model, x, eps, beta, objective):
    """Bound, recon, KL and d(-mean bound)/dtheta by autograd through objectives.elbo / objectives.iwae
    (the trainer's ``BoundModule``): what the hand-derived fast paths are checked against."""
    from aevb.training.step import BoundModule

    model.zero_grad(set_to_none=True)
    value, recon, kl = BoundModule(model, objective)(x, eps, beta)
    (-value.sum() / len(x)).backward()
    grads = [p.grad.clone() for p in model.parameters()]
    model.zero_grad(set_to_none=True)
    return value.detach(), recon.detach(), kl.detach(), grads


def binary_draws(batch, num_samples, noise_dim, dtype, seed=1, num_dims=30):
    """Binary x (batch, num_dims) with uneven pixel rates and noise eps (num_samples, batch, noise_dim)."""
    g = torch.Generator().manual_seed(seed)
    x = (torch.rand(batch, num_dims, generator=g) < torch.rand(num_dims, generator=g)).to(dtype)
    return x, torch.randn(num_samples, batch, noise_dim, generator=g).to(dtype)


def assert_fast_epoch_equals_autograd(tmp_path, monkeypatch, fast_class, tol, **sections):
    """Train one epoch of the digits (29 batches of 50 and a last partial batch of 5) on ``fast_class``'s
    fast path and through autograd from the same seed; assert that every fast-run step took the fast path,
    that the autograd run took none, and that the final weights agree to ``tol`` (float32 rounding)."""
    from aevb.training.checkpoint import load_run
    from aevb.training.loop import train

    calls, real = [], fast_class.forward_backward
    monkeypatch.setattr(fast_class, "forward_backward", lambda self, x, *a: calls.append(len(x)) or real(self, x, *a))
    train_section = sections.pop("train", {})
    runs = []
    for fast in (True, False):
        cfg = tiny_config(tmp_path / str(fast), train={"epochs": 1, "fast_path": fast, **train_section}, **sections)
        runs.append(load_run(train(cfg)))
        assert calls == [50] * 29 + [5]  # every step of the fast run took the fast path; the autograd run added none
    (_, a, _), (_, b, _) = runs
    for (name, pa), pb in zip(a.named_parameters(), b.parameters()):
        torch.testing.assert_close(pa, pb, rtol=tol, atol=tol, msg=name)
