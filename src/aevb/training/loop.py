"""Training: ``train(cfg) -> run_dir`` sets up a run (or resumes one); ``fit`` is the loop.

The data stay in memory as tensors on the device; each epoch draws a seeded permutation (a pure
function of the seed and the epoch) and walks through it in batches; each batch is binarized
afresh (dynamic binarization) and the mean per-example bound over the global batch is maximised
(the only place a mean over examples is taken). See docs/training.md.
"""

from __future__ import annotations

import math
import os
import shutil
import signal
import sys
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import torch
from tqdm import tqdm

from aevb.config import RESUMABLE, RunConfig, config_differences, validate
from aevb.data import DataInfo, Splits, build_datasets
from aevb.data.advice import data_warnings
from aevb.data.fingerprint import BackgroundFingerprint
from aevb.inference.evaluate import evaluate_elbo, observed_entries, observed_note
from aevb.models.vae import VAE, build_model
from aevb.outputs.figures import write_basic_plots
from aevb.outputs.measure import protocol_text
from aevb.outputs.plots import preload_pyplot
from aevb.speed.fastpath import FastElbo, build_fast_bound, fast_path_reason
from aevb.training import distributed
from aevb.training.checkpoint import (
    CheckpointError,
    describe_write_error,
    find_checkpoint,
    list_checkpoints,
    read_state,
    read_tensors,
    save_checkpoint,
    write_json_atomic,
)
from aevb.training.metrics import MetricsLog, truncate_metrics
from aevb.training.optim import build_optimizer, learning_rate, set_learning_rate
from aevb.training.rundir import RunDirError, claim_run_dir
from aevb.training.state import (
    TrainState,
    all_finite,
    restore_state,
    snapshot_state,
    validate_state,
)
from aevb.training.step import BoundModule, draw_batch, optimizer_step


class NonFiniteError(RuntimeError):
    """The bound or its gradient stayed non-finite after every allowed rollback."""


def resolve_device(name: str) -> torch.device:
    """"auto" -> cuda if available, else mps if available, else cpu; others are checked."""
    mps = getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "mps" if mps else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("--device cuda was asked for, but torch sees no CUDA device")
    if name == "mps" and not mps:
        raise RuntimeError("--device mps was asked for, but MPS is not available")
    return torch.device(name)


def resolve_threads(threads: int) -> int:
    """Intra-op threads: ``threads`` if > 0, else OMP_NUM_THREADS if set, else 1 (see docs/performance.md)."""
    if threads > 0:
        return threads
    env = os.environ.get("OMP_NUM_THREADS", "")
    return int(env) if env.isdigit() and int(env) > 0 else 1


def default_run_dir() -> Path:
    """``runs/<timestamp>`` (with ``-1``, ``-2``, ... when that name is taken)."""
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    path = Path("runs") / stamp
    for i in range(1, 1000):
        if not path.exists():
            break
        path = Path("runs") / f"{stamp}-{i}"
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
            lo, hi = torch.aminmax(x)  # one pass (0.15 s -> 0.01 s for MNIST's training split); NaN makes both NaN
            if not (float(lo) >= 0 and float(hi) <= 1):
                raise ValueError(f"{split}: dynamic binarization needs values in [0, 1]")
            continue
        model.likelihood_module.check_data(x, where=f"{info.name} {split} split")


def resolve_num_classes(cfg: RunConfig, splits: Splits, info) -> None:
    """A conditional model needs labels on every non-empty split; ``model.num_classes`` 0 becomes
    the number of label names, else the largest training label + 1 (saved in config.json)."""
    if not cfg.model.conditional:
        return
    for split in ("train", "valid", "test"):
        x, y = splits.get(split)
        if len(x) and y is None:
            raise ValueError(f"model.conditional = true needs labels, but the {split} split of {info.name} has none; "
                             "labels come from IDX label files, class sub-folders, a CSV label column "
                             "(data.label_column) or a labels/y array in .npz")
    labels = [y for y in (splits.train_labels, splits.valid_labels, splits.test_labels) if y is not None and len(y)]
    if cfg.model.num_classes == 0:
        names = getattr(info, "label_names", None)
        cfg.model.num_classes = len(names) if names else int(splits.train_labels.max()) + 1
    top = max(int(y.max()) for y in labels)
    if top >= cfg.model.num_classes or min(int(y.min()) for y in labels) < 0:
        raise ValueError(f"labels run to {top} but model.num_classes = {cfg.model.num_classes}: labels must be "
                         f"0..num_classes-1")


def epoch_permutation(n: int, seed: int, epoch: int, device: torch.device) -> torch.Tensor:
    """The order of the training examples in a 0-based epoch: a function of (seed, epoch) only."""
    g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    return torch.randperm(n, generator=g).to(device)


class TestHooks:
    """Fault injection for the tests, read from the environment (all off by default).

    AEVB_TEST_KILL_AT_STEP=N: SIGKILL this process right after step N. AEVB_TEST_NAN_AT_STEP=N:
    poison the z noise of step N with NaN, at most AEVB_TEST_NAN_TIMES times (default: always).
    """

    def __init__(self):
        env = os.environ
        self.kill_at = int(env.get("AEVB_TEST_KILL_AT_STEP", "-1"))
        self.nan_at = int(env.get("AEVB_TEST_NAN_AT_STEP", "-1"))
        self.nan_times = int(env.get("AEVB_TEST_NAN_TIMES", "1000000"))

    def poison(self, step: int, eps: torch.Tensor) -> None:
        if step == self.nan_at and self.nan_times > 0:
            self.nan_times -= 1
            eps[..., :1, :] = float("nan")

    def after_step(self, step: int) -> None:
        if step == self.kill_at:
            os.kill(os.getpid(), signal.SIGKILL)


@dataclass
class Run:
    """What the loop needs besides the state: data, config, run directory, ranks and the log."""

    cfg: RunConfig
    splits: Splits
    info: DataInfo
    run_dir: Path
    ctx: distributed.DistContext
    log: MetricsLog
    last_checkpoint: str = ""  # folder of the last step checkpoint written (rank 0)


def checkpoint(ts: TrainState, run: Run, name: str = "") -> tuple:
    """Write the state (rank 0) and return an in-memory snapshot of it (every rank)."""
    snapshot = snapshot_state(ts, run.cfg)
    if not all_finite({k: v for k, v in snapshot[0].items() if k.startswith(("model.", "optimizer."))}):
        raise NonFiniteError(f"refusing to write a checkpoint with NaN/inf at step {ts.step} (this is a bug)")
    if run.ctx.is_main:
        folder = run.run_dir / "checkpoints" / (name or f"step-{ts.step:08d}")
        try:
            save_checkpoint(folder, snapshot[0], snapshot[1])
        except CheckpointError as e:
            raise RunDirError(f"{e}; {resume_hint(run.run_dir)}") from None
        if not name:
            run.last_checkpoint = str(folder)
            for old in list_checkpoints(run.run_dir)[:-max(1, run.cfg.train.keep_checkpoints)]:
                shutil.rmtree(old, ignore_errors=True)
    ts.nan_retries = 0 if not name else ts.nan_retries
    return snapshot


def resume_hint(run_dir: Path) -> str:
    """What a failed write leaves and how to go on (for disk-full and similar errors)."""
    found = list_checkpoints(run_dir)
    if not found:
        return "no checkpoint was written yet; free some space and start the run again with --overwrite"
    return (f"the last good checkpoint ({found[-1]}) is intact; free some space and continue with "
            f"`aevb train --resume {run_dir}`")


def validate_now(ts: TrainState, run: Run) -> dict:
    """Validation ELBO (seeded), best checkpoint and early-stopping bookkeeping."""
    if len(run.splits.valid) == 0:
        return {}
    ts.model.eval()
    v = evaluate_elbo(ts.model, run.splits.valid, binarization=run.info.binarization, seed=run.cfg.eval.seed,
                      labels=run.splits.valid_labels)
    ts.model.train()
    if v["elbo"] > ts.best_valid:
        ts.best_valid, ts.best_step, ts.stale_validations = v["elbo"], ts.step, 0
        checkpoint(ts, run, name="best")
    else:
        ts.stale_validations += 1
        patience = run.cfg.train.early_stopping
        if patience and ts.stale_validations >= patience:
            ts.stopped = (f"early stopping: no better validation ELBO in {patience} validations "
                          f"(best {ts.best_valid:.3f} nats at step {ts.best_step})")
    return {"valid/elbo": v["elbo"], "valid/recon": v["recon"], "valid/kl": v["kl"]}


def roll_back(ts: TrainState, run: Run, snapshot: tuple[dict, dict], why: str) -> None:
    """Restore the last good state and lower the learning rate, or stop with a clear message."""
    t = run.cfg.train
    where = f"step {ts.step + 1} (epoch {ts.epoch + 1}, batch {ts.batch + 1})"
    retries, scale = ts.nan_retries + 1, ts.lr_scale * 0.1
    if retries > t.max_nan_retries:
        raise NonFiniteError(
            f"non-finite training bound at {where}: {why}. Rolled back and lowered the learning rate "
            f"{t.max_nan_retries} time(s) without getting past it. Last good checkpoint: "
            f"{run.last_checkpoint or '(none written yet)'}. Try a lower --lr, --set train.grad_clip=..., "
            "or check the data.")
    restore_state(ts, *snapshot, copy=True)
    ts.nan_retries, ts.lr_scale = retries, scale
    if run.ctx.is_main:
        tqdm.write(f"NaN guard: {why} at {where}; rolled back to step {ts.step} and lowered the "
                   f"learning rate x0.1 (retry {retries} of {t.max_nan_retries})")


def bound_label(o, step: int) -> str:
    """How the epoch line names the training bound: only beta = 1 after warm-up is an ELBO."""
    if o.name == "iwae":
        return f"IWAE bound (K={o.num_samples})"
    if o.warmup_steps and step < o.warmup_steps:
        return "KL warm-up bound (not an ELBO)"
    return "ELBO" if o.beta == 1.0 else f"beta={o.beta:g} bound (not an ELBO)"


def end_epoch(ts: TrainState, run: Run, local_sums: torch.Tensor, examples: int, seconds: float) -> None:
    """Reduce the epoch's sums over ranks, validate, log, print the epoch line."""
    flush_sums(ts, run, local_sums)
    s, t = ts.sums, run.cfg.train
    ts.epoch, ts.batch, ts.sums = ts.epoch + 1, 0, [0.0, 0.0, 0.0, 0.0]
    name = bound_label(run.cfg.objective, ts.step)
    record = {"step": ts.step, "epoch": ts.epoch, "examples": ts.epoch * len(run.splits.train),
              "train/bound": s[0] / s[3], "train/bound_name": name,
              **({"train/elbo": s[0] / s[3]} if name == "ELBO" else {}),
              "train/recon": s[1] / s[3], "train/kl": s[2] / s[3],
              "examples_per_s": examples / max(seconds, 1e-9), "time_s": ts.seconds,
              "lr": learning_rate(t, ts.epoch - 1, ts.lr_scale)}
    if t.eval_every == 0:
        record.update(validate_now(ts, run))
    run.log.write(record)
    if run.ctx.is_main:
        valid = f"  valid ELBO {record['valid/elbo']:9.3f} nats" if "valid/elbo" in record else ""
        tqdm.write(f"epoch {ts.epoch:3d}/{t.epochs}  train {name} {record['train/bound']:9.3f}{valid}  "
                   f"(recon {record['train/recon']:.2f}, KL {record['train/kl']:.2f})  "
                   f"{record['examples_per_s']:,.0f} ex/s")


def flush_sums(ts: TrainState, run: Run, local_sums: torch.Tensor) -> None:
    total = distributed.all_reduce_sum(local_sums.clone(), run.ctx).tolist()
    ts.sums = [a + b for a, b in zip(ts.sums, total)]
    local_sums.zero_()


def fit(ts: TrainState, module: torch.nn.Module, run: Run) -> None:
    """Train until ``cfg.train.epochs`` epochs are done or early stopping; checkpoint as configured.

    On CPU denormal floats are flushed to zero while the loop runs (``train.flush_denormal``).
    """
    flush = run.ctx.device.type == "cpu" and run.cfg.train.flush_denormal and torch.set_flush_denormal(True)
    try:
        fit_loop(ts, module, run)
    finally:
        if flush:
            torch.set_flush_denormal(False)


def fit_loop(ts: TrainState, module: torch.nn.Module, run: Run) -> None:
    """The loop of ``fit``: one optimizer step per iteration, from wherever ``ts`` stands."""
    cfg, ctx = run.cfg, run.ctx
    t, o = cfg.train, cfg.objective
    x_train = run.splits.train
    y_train = run.splits.train_labels if getattr(ts.model, "conditional", False) else None
    n, batch_size = len(x_train), min(t.batch_size, len(x_train))
    steps_per_epoch = math.ceil(n / batch_size)
    params = [p for p in ts.model.parameters() if p.requires_grad]
    local_sums = torch.zeros(4, dtype=torch.float64, device=x_train.device)
    hooks, snapshot, perm_epoch, bar, last = TestHooks(), snapshot_state(ts, cfg), -1, None, time.perf_counter()
    any_rank = lambda flag: distributed.any_rank(flag, ctx, x_train.device)  # noqa: E731
    step_fn = FastElbo.optimizer_step if isinstance(module, FastElbo) else optimizer_step
    while ts.epoch < t.epochs and not ts.stopped:
        if perm_epoch != ts.epoch:  # a new epoch, a resume or a rollback
            perm, perm_epoch = epoch_permutation(n, t.seed, ts.epoch, x_train.device), ts.epoch
            set_learning_rate(ts.optimizer, learning_rate(t, ts.epoch, ts.lr_scale))
            if bar is not None:
                bar.close()
            bar = tqdm(total=steps_per_epoch, initial=ts.batch, desc=f"epoch {ts.epoch + 1}/{t.epochs}",
                       disable=t.quiet or not ctx.is_main or not sys.stderr.isatty(), leave=False, mininterval=0.5, unit="step")
            start, start_step = time.perf_counter(), ts.step
        idx = perm[ts.batch * batch_size:(ts.batch + 1) * batch_size]  # the global batch
        rows = ctx.local_rows(len(idx))  # this rank's share of it
        x, eps = draw_batch(x_train, idx, rows, run.info.binarization, o.num_samples, ts.model.noise_dim, ts.noise)
        labels = y_train[idx[rows]] if y_train is not None else None  # conditional models only
        hooks.poison(ts.step + 1, eps)
        beta = o.beta if o.warmup_steps == 0 else o.beta * min(1.0, (ts.step + 1) / o.warmup_steps)
        sums, why = step_fn(module, ts.model, ts.optimizer, params, x, eps, beta,
                            idx[rows], len(idx), ctx.world_size, t, n, any_rank,
                            **({"labels": labels} if labels is not None else {}))
        if sums is None:
            roll_back(ts, run, snapshot, why)
            local_sums.zero_()
            perm_epoch = -1
            continue
        local_sums += sums
        ts.step, ts.batch = ts.step + 1, ts.batch + 1
        now = time.perf_counter()
        ts.seconds, last = ts.seconds + (now - last), now
        if not bar.disable:
            bar.update(1)
            if ts.batch % 20 == 0:
                seen = max(float(local_sums[3]), 1.0)
                bar.set_postfix(elbo=f"{float(local_sums[0]) / seen:.2f}", recon=f"{float(local_sums[1]) / seen:.2f}",
                                kl=f"{float(local_sums[2]) / seen:.2f}",
                                ex_s=f"{(ts.step - start_step) * batch_size / (now - start):,.0f}", refresh=False)
        if ts.batch == steps_per_epoch:
            end_epoch(ts, run, local_sums, (ts.step - start_step) * batch_size, now - start)
        if t.eval_every and ts.step % t.eval_every == 0:
            run.log.write({"step": ts.step, "epoch": ts.epoch, "examples": ts.epoch * n + ts.batch * batch_size,
                           "time_s": ts.seconds, "lr": learning_rate(t, ts.epoch, ts.lr_scale),
                           **validate_now(ts, run)})
        if (t.checkpoint_every and ts.step % t.checkpoint_every == 0) or \
                (t.checkpoint_every == 0 and ts.batch == 0):
            flush_sums(ts, run, local_sums)
            snapshot = checkpoint(ts, run)
        hooks.after_step(ts.step)
    flush_sums(ts, run, local_sums)  # an early stop mid-epoch keeps its partial sums in the final state
    if bar is not None:
        bar.close()
    if ts.stopped and ctx.is_main:
        tqdm.write(ts.stopped)


def build_bound_module(model: VAE, cfg: RunConfig, world_size: int = 1):
    """``fastpath.FastElbo`` (or its L-layer form) when it applies to the model and config, else the autograd
    ``BoundModule``."""
    if not fast_path_reason(model, cfg, world_size):
        return build_fast_bound(model, cfg.objective)
    return BoundModule(model, cfg.objective)


def fit_wrapped(ts: TrainState, run: Run) -> None:
    """``fit`` through the bound module, in DDP under torchrun and compiled if asked.

    The wrappers are dropped before returning (or raising): a DDP module still alive when the
    process group is destroyed can abort the process at exit.
    """
    module = build_bound_module(ts.model, run.cfg, run.ctx.world_size)
    try:
        if run.ctx.enabled and not isinstance(module, FastElbo):  # the fast path averages its own gradients
            from torch.nn.parallel import DistributedDataParallel as DDP

            device = run.ctx.device
            module = DDP(module, device_ids=[device.index] if device.type == "cuda" else None)
        if run.cfg.train.compile:
            module = torch.compile(module)
        fit(ts, module, run)
    finally:
        del module


def resolve_config(cfg: RunConfig, resume: bool = False) -> RunConfig:
    """Validate every field (``config.validate``); resumed runs are checked the same way."""
    validate(cfg)
    return cfg


def build_state(cfg: RunConfig, splits: Splits, info, device: torch.device) -> TrainState:
    torch.manual_seed(cfg.train.seed)
    # the plain mean (the same bits as nanmean without NaN, a tenth of its time); nanmean where NaN marks a
    # missing entry under data.missing = mask
    train_mean = splits.train.mean(0)
    if bool(torch.isnan(train_mean).any()):
        train_mean = splits.train.nanmean(0)
    model = build_model(cfg.model, info, train_mean=train_mean, train_data=splits.train).to(device)
    check_data_fits(model, splits, info)
    for message in data_warnings(splits.train, info, cfg.model.likelihood, cfg.model.latent_dim):
        print(f"warning: {message}", file=sys.stderr)
    optimizer = build_optimizer(model.parameters(), cfg.train, device)
    return TrainState(model, optimizer, torch.Generator(device=device).manual_seed(cfg.train.seed))


def resume_state(ts: TrainState, run: Run) -> Path:
    """Load the last checkpoint of the run into ``ts``, after checking that it fits what is resumed.

    Refused (CheckpointError) when state.json fails its schema (``state.validate_state``), when
    config.json was edited after the run started (a field outside RESUMABLE differs from the config
    saved in the checkpoint: the checkpoint's settings are the run's), when the prepared data differ
    from those the run started with (fingerprints), or when the position in the epoch does not fit
    the data (step = epoch x steps per epoch + batch).
    """
    ckpt = find_checkpoint(run.run_dir, "last")
    meta = validate_state(read_state(ckpt), ckpt)
    try:
        saved = RunConfig.from_dict(meta["config"])
    except (ValueError, TypeError, KeyError) as e:
        raise CheckpointError(f"{ckpt / 'state.json'}: its config cannot be read ({str(e)[:200]})") from None
    changed = config_differences(saved, run.cfg)
    if changed:
        fields = "; ".join(f"{key} is {now!r} in config.json but {then!r} in the checkpoint" for key, then, now in changed)
        raise CheckpointError(f"--resume {run.run_dir}: config.json was changed after the run started ({fields}). "
                              f"The checkpoint's settings are the run's: put them back in config.json, or start a "
                              f"new run with the new settings (only {', '.join(sorted(b for _, b in RESUMABLE))} may "
                              "change on resume, as flags)")
    recorded = meta.get("data_fingerprint") or ""
    if recorded and recorded != str(ts.data_fingerprint):
        raise CheckpointError(f"--resume {run.run_dir}: the data changed since the run started (the files of "
                              f"data.name = {run.cfg.data.name!r} were replaced or edited): now {ts.data_fingerprint}; "
                              f"when the run started {recorded}. Put the original data back, or start a new run")
    n = len(run.splits.train)
    per_epoch = math.ceil(n / min(run.cfg.train.batch_size, n))
    if meta["batch"] >= per_epoch or meta["step"] != meta["epoch"] * per_epoch + meta["batch"]:
        raise CheckpointError(f"{ckpt / 'state.json'}: step {meta['step']}, epoch {meta['epoch']}, batch "
                              f"{meta['batch']} do not fit {per_epoch} steps per epoch (step = epoch x {per_epoch} "
                              "+ batch); the file was edited or the data changed")
    tensors = read_tensors(ckpt)
    try:
        restore_state(ts, tensors, meta)
    except (RuntimeError, KeyError, ValueError, TypeError) as e:
        raise CheckpointError(f"{ckpt}: cannot restore the training state from it ({str(e)[:300]})") from None
    return ckpt


def finish(ts: TrainState, run: Run) -> None:
    """Last checkpoint, test ELBO, summary.json and figures (rank 0)."""
    info, splits = run.info, run.splits
    if not run.last_checkpoint.endswith(f"step-{ts.step:08d}"):
        checkpoint(ts, run)
    if not run.ctx.is_main:
        return
    ts.model.eval()
    test = evaluate_elbo(ts.model, splits.test, binarization=info.binarization, seed=run.cfg.eval.seed,
                         labels=splits.test_labels) if len(splits.test) else None
    observed = observed_entries(splits.test, info) if test else None
    if test and observed is not None:
        test["observed"] = observed_note(observed, info.num_dims)
    write_json_atomic(run.run_dir / "summary.json", {
        "test": test, "epochs": ts.epoch, "steps": ts.step, "train_examples": len(splits.train),
        "train_bound": bound_label(run.cfg.objective, ts.step),
        "best_valid_elbo": ts.best_valid if math.isfinite(ts.best_valid) else None, "best_step": ts.best_step,
        "stopped": ts.stopped, "train_seconds": ts.seconds})
    write_basic_plots(ts.model, splits, info, run.run_dir, run.cfg.train.seed)
    print(f"run directory: {run.run_dir}")
    if test is None:
        print("test ELBO: not computed (the test split is empty: data.test_fraction = 0)")
        return
    given_y = " (a bound on log p(x|y): the model is conditional)" if getattr(ts.model, "conditional", False) else ""
    print(f"test ELBO{given_y}: {test['elbo']:.2f} ± {test['elbo_se']:.2f} nats per example "
          f"(recon {test['recon']:.2f}, KL {test['kl']:.2f}; n={test['n']}, {protocol_text(info.binarization, None, info)})"
          + (f"; {test['observed']}" if "observed" in test else ""))


def train(cfg: RunConfig, resume: bool = False, overwrite: bool = False) -> Path:
    """Train a VAE as configured and write (or continue) a run directory.

    The run directory receives ``config.json`` (resolved config), ``data.json`` (DataInfo),
    ``metrics.jsonl``, ``checkpoints/step-XXXXXXXX/`` and ``checkpoints/best/`` (full training
    state: safetensors + JSON), ``summary.json`` (final test ELBO) and ``plots/``. The process
    holds the folder's lock while it runs (``training.rundir``): one writer per run directory.

    Args:
        cfg: the run configuration; with ``resume`` it must be the run's saved config (``cfg.out``
            is the run directory) and training continues from its last checkpoint.
        overwrite: a new run may empty an existing run directory ``cfg.out`` (else it is refused).

    Returns:
        The run directory.
    """
    resolve_config(cfg, resume)
    torch.set_num_threads(resolve_threads(cfg.train.threads))
    ctx = distributed.setup(resolve_device(cfg.train.device))
    device = ctx.device
    lock = None
    run_dir = Path(cfg.out) if resume or cfg.out else default_run_dir()
    try:
        if ctx.is_main:  # one writer per run directory; refuses a second trainer and a reused --out
            lock = claim_run_dir(run_dir, new=not resume, overwrite=overwrite)
        splits, info = build_datasets(cfg.data, cfg.model.likelihood)
        resolve_num_classes(cfg, splits, info)
        fingerprint = BackgroundFingerprint(splits.train, splits.valid, splits.test)  # beside the set-up and first steps
        ts = build_state(cfg, splits, info, device)  # checks that the data fit the model first
        ts.data_fingerprint = fingerprint
        splits = Splits(*(t.to(device) for t in (splits.train, splits.valid, splits.test)),
                        *(None if y is None else y.to(device)
                          for y in (splits.train_labels, splits.valid_labels, splits.test_labels)))
        log = MetricsLog(run_dir / "metrics.jsonl", enabled=ctx.is_main,
                         tensorboard=cfg.train.tensorboard and ctx.is_main)
        run = Run(cfg, splits, info, run_dir, ctx, log)
        if resume:
            ckpt = resume_state(ts, run)
            run.last_checkpoint = str(ckpt)
            if ctx.is_main:
                truncate_metrics(run_dir / "metrics.jsonl", ts.step)
                write_json_atomic(run_dir / "config.json", cfg.to_dict())  # with this session's resumable changes (e.g. --epochs)
                print(f"resuming {run_dir} from {ckpt.name} (epoch {ts.epoch + 1}, batch {ts.batch + 1})")
        elif ctx.is_main:
            cfg.out = str(run_dir)
            cfg.save(run_dir / "config.json")
            write_json_atomic(run_dir / "data.json", info.to_dict())
        if not resume or ctx.rank > 0:  # torch's global stream (only posterior families without a registered reparameterisation use it), per rank
            torch.manual_seed(cfg.train.seed + 7919 * ctx.rank + ts.step)
        if ctx.is_main:
            preload_pyplot()  # the figures' import runs beside training, not after it
        fit_wrapped(ts, run)
        finish(ts, run)
        log.close()
        return run_dir
    except OSError as e:
        if describe_write_error(e) != "no space left on device":
            raise
        where = f" ({e.filename})" if getattr(e, "filename", None) else ""
        raise RunDirError(f"cannot write to {run_dir}{where}: no space left on device; {resume_hint(run_dir)}") from None
    finally:
        if lock is not None:
            lock.release()
        distributed.teardown(ctx)
