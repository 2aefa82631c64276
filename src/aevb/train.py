"""Training: ``train(cfg) -> run_dir`` sets up a run; ``fit`` is the loop.

The loop keeps the data as tensors in memory, draws shuffled index batches, binarizes each
batch afresh (dynamic binarization), maximises the mean per-example bound (the only place a
mean over examples is taken) and validates after every epoch.
"""

from __future__ import annotations

import math
import time
from datetime import datetime
from pathlib import Path

import torch
from tqdm import tqdm

from . import __version__
from .checkpoint import save_checkpoint, unwrap, write_json_atomic
from .config import RunConfig, validate
from .data import Splits, build_datasets, prepare_batch
from .evaluate import evaluate_elbo
from .figures import write_basic_plots
from .metrics import MetricsLog
from .model import VAE, build_model
from .objectives import OBJECTIVES


def resolve_device(name: str) -> torch.device:
    """"auto" -> cuda if available, else mps if available, else cpu; others are checked."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("--device cuda was asked for, but torch sees no CUDA device")
    if name == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise RuntimeError("--device mps was asked for, but MPS is not available")
    return torch.device(name)


def build_optimizer(params, train_cfg) -> torch.optim.Optimizer:
    """Adam (fused where torch supports it) or Adagrad, from a ``TrainConfig``."""
    params = list(params)
    if train_cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=train_cfg.lr, eps=train_cfg.adam_eps, foreach=True)
    if train_cfg.optimizer == "adagrad":
        return torch.optim.Adagrad(params, lr=train_cfg.lr, foreach=True)
    raise ValueError(f"unknown optimizer {train_cfg.optimizer!r}; allowed: adam, adagrad")


def make_run_dir(out: str) -> Path:
    """The run directory: ``out`` if given, else ``runs/<timestamp>``; created if missing."""
    path = Path(out) if out else Path("runs") / datetime.now().strftime("%Y%m%d-%H%M%S")
    path.mkdir(parents=True, exist_ok=True)
    return path


def check_data_fits(model: VAE, splits: Splits, info) -> None:
    """Raise a clear error when the data cannot be scored by the model's likelihood."""
    for split in ("train", "valid", "test"):
        x, _ = splits.get(split)
        if len(x) == 0:
            if split == "train":
                raise ValueError("the training split is empty")
            continue
        if info.binarization == "dynamic":
            bad = ~((x >= 0) & (x <= 1))
            if bad.any():
                raise ValueError(f"{split}: dynamic binarization needs values in [0, 1]")
            continue
        model.likelihood_module.check_data(x, where=f"{info.name} {split} split")


def model_tensors(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The unwrapped model's state dict under ``model.`` keys (the checkpoint's weight names)."""
    return {f"model.{k}": v for k, v in unwrap(model).state_dict().items()}


def fit(model: VAE, optimizer: torch.optim.Optimizer, splits: Splits, info, cfg: RunConfig,
        run_dir: Path, generator: torch.Generator) -> dict:
    """Run ``cfg.train.epochs`` epochs of stochastic gradient ascent on the mean bound.

    Returns:
        The last epoch's metrics record.
    """
    t, o = cfg.train, cfg.objective
    objective = OBJECTIVES[o.name]
    log = MetricsLog(run_dir / "metrics.jsonl")
    x_train = splits.train
    n, batch_size = len(x_train), min(t.batch_size, len(x_train))
    steps_per_epoch = math.ceil(n / batch_size)
    step, record = 0, {}
    start = time.perf_counter()
    for epoch in range(1, t.epochs + 1):
        model.train()
        perm = torch.randperm(n, generator=generator)
        sums = torch.zeros(3, dtype=torch.float64)
        epoch_start = time.perf_counter()
        bar = tqdm(range(steps_per_epoch), desc=f"epoch {epoch}/{t.epochs}", disable=t.quiet,
                   leave=False, mininterval=0.5, unit="step")
        for i in bar:
            idx = perm[i * batch_size:(i + 1) * batch_size]
            x = prepare_batch(x_train[idx], info.binarization, generator)
            beta = o.beta if o.warmup_steps == 0 else o.beta * min(1.0, (step + 1) / o.warmup_steps)
            bound = objective(model, x, num_samples=o.num_samples, kl=o.kl, beta=beta)
            loss = -bound.value.mean()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            step += 1
            sums += torch.stack([bound.value.sum(), bound.recon.sum(), bound.kl.sum()]).detach().double()
            if not t.quiet and i % 20 == 0:
                seen = min((i + 1) * batch_size, n)
                bar.set_postfix(elbo=f"{sums[0] / seen:.2f}", recon=f"{sums[1] / seen:.2f}",
                                kl=f"{sums[2] / seen:.2f}", refresh=False)
        seconds = time.perf_counter() - epoch_start
        model.eval()
        valid = evaluate_elbo(model, splits.valid, binarization=info.binarization, seed=cfg.eval.seed) \
            if len(splits.valid) else {"elbo": float("nan")}
        record = {"step": step, "epoch": epoch, "examples": step * batch_size,
                  "train/elbo": float(sums[0] / n), "train/recon": float(sums[1] / n), "train/kl": float(sums[2] / n),
                  "valid/elbo": valid["elbo"], "examples_per_s": n / seconds,
                  "time_s": time.perf_counter() - start}
        log.write(record)
        bound_name = "ELBO" if (o.name == "elbo" and o.beta == 1.0) else f"{o.name} bound"
        if o.beta != 1.0:
            bound_name += " (beta != 1: not an ELBO)"
        tqdm.write(f"epoch {epoch:3d}/{t.epochs}  train {bound_name} {record['train/elbo']:9.3f}  "
                   f"valid ELBO {record['valid/elbo']:9.3f} nats  (recon {record['train/recon']:.2f}, "
                   f"KL {record['train/kl']:.2f})  {record['examples_per_s']:,.0f} ex/s")
    return record


def train(cfg: RunConfig) -> Path:
    """Train a VAE as configured and write a run directory.

    The run directory receives ``config.json`` (resolved config), ``data.json`` (DataInfo),
    ``metrics.jsonl``, ``checkpoints/step-XXXXXXXX/`` (safetensors weights + JSON state),
    ``summary.json`` (final test ELBO) and ``plots/`` (reconstructions and samples).

    Returns:
        The run directory.
    """
    validate(cfg)
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    torch.manual_seed(cfg.train.seed)
    generator = torch.Generator().manual_seed(cfg.train.seed)
    device = resolve_device(cfg.train.device)
    splits, info = build_datasets(cfg.data, cfg.model.likelihood)
    run_dir = make_run_dir(cfg.out)
    cfg.out = str(run_dir)
    cfg.save(run_dir / "config.json")
    write_json_atomic(run_dir / "data.json", info.to_dict())

    model = build_model(cfg.model, info, train_mean=splits.train.mean(0)).to(device)
    check_data_fits(model, splits, info)
    optimizer = build_optimizer(model.parameters(), cfg.train)
    record = fit(model, optimizer, splits, info, cfg, run_dir, generator)

    state = {"step": record.get("step", 0), "epoch": record.get("epoch", 0), "version": __version__,
             "metrics": record}
    save_checkpoint(run_dir / "checkpoints" / f"step-{state['step']:08d}", model_tensors(model), state)
    model.eval()
    test = evaluate_elbo(model, splits.test, binarization=info.binarization, seed=cfg.eval.seed)
    write_json_atomic(run_dir / "summary.json", {"test": test, "epochs": record.get("epoch", 0),
                                                  "steps": record.get("step", 0), "train_examples": len(splits.train)})
    write_basic_plots(model, splits, info, run_dir, cfg.train.seed)
    print(f"run directory: {run_dir}")
    print(f"test ELBO: {test['elbo']:.2f} ± {test['elbo_se']:.2f} nats per example "
          f"(recon {test['recon']:.2f}, KL {test['kl']:.2f}; n={test['n']}, {info.binarization} binarization)")
    return run_dir
