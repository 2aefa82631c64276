"""Reproduce the one-stochastic-layer rows of table 1 of Burda, Grosse & Salakhutdinov (2016),
Importance Weighted Autoencoders, on MNIST.

Protocol (the ``iwae-mnist`` preset): MNIST ``split = "iwae"`` (train on the first 59,600
training images, validate on the last 400, test on the 10,000 test images), dynamic
binarization of the training images, a 784-200-200-50-200-200-784 tanh model with a Bernoulli
decoder whose output bias starts at the logit of the training mean, Adam (beta1 0.9, beta2 0.999,
eps 1e-4), minibatches of 20, and the 3^i schedule: learning rate 1e-3 * 10^(-i/7) for 3^i passes,
i = 0..7, 3,280 passes in all. With fewer ``--epochs`` the trainer keeps the stages' fractions.

Rows: ``vae`` (k = 1; the ELBO with the analytic KL) and ``iwae`` with k = 5 or 50.
Test log p(x) is estimated by the IWAE bound L_5000 on all 10,000 test images, binarized once
with a fixed seed; active units are the dimensions u with Cov_x(E_q[u | x]) > 1e-2 (Burda et
al., sec. 5.2) over the test images.

    python benchmarks/reproduce_iwae.py --row vae --epochs 10 --out runs/iwae      # the CPU budget of docs/results.md
    python benchmarks/reproduce_iwae.py --row iwae --k 5 --epochs 10 --out runs/iwae
    python benchmarks/reproduce_iwae.py --evaluate runs/iwae/vae-k1                 # L_5000 only
    python benchmarks/reproduce_iwae.py --table --out runs/iwae                     # markdown rows
    python benchmarks/reproduce_iwae.py --full --device cuda                         # the paper's 3,280 passes, all rows

L_5000 is computed here from log weights drawn in chunks (``model.log_weights``, or for a Bernoulli
decoder the same numbers written out, ``bernoulli_log_weights``) and a log-sum-exp; it should move to
``aevb evaluate`` (the library's IWAE evaluation) once that exists on main.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _recipes import config_from, data_dir, read_run, threads_env, tiny_sections  # noqa: E402

PAPER_NLL = {("vae", 1): 86.76, ("iwae", 5): 85.54, ("iwae", 50): 84.78}  # Burda et al. table 1, nats
FULL_ROWS = (("vae", 1), ("iwae", 5), ("iwae", 50))


def row_config(row: str, k: int, epochs: int, out: str, seed: int = 0, threads: int = 1, device: str = "cpu",
               tiny: bool = False):
    """The RunConfig of one row: ``vae`` (k = 1, analytic-KL ELBO) or ``iwae`` with k samples."""
    if row == "vae" and k != 1:
        raise ValueError(f"--row vae trains the k = 1 ELBO; got --k {k} (use --row iwae for k > 1)")
    objective = {"name": "elbo", "kl": "analytic", "num_samples": 1} if row == "vae" else \
        {"name": "iwae", "num_samples": k}
    sections = {"data": {"data_dir": data_dir()}, "objective": objective,
                "train": {"epochs": epochs, "seed": seed, "threads": threads, "device": device, "quiet": True,
                          "tensorboard": False},
                "out": str(Path(out) / f"{row}-k{k}")}
    cfg = config_from("iwae-mnist", sections)
    if tiny:
        from aevb.config import update
        update(cfg, tiny_sections())
    return cfg


def bernoulli_log_weights(model, x, num_samples: int):
    """``model.log_weights`` for a Bernoulli decoder, about 2.5x faster on one CPU thread.

    log w_j = log p(x | z_j) + log p(z_j) - log q(z_j | x), z_j ~ q(z | x), with the Bernoulli
    log-likelihood written out for decoder logits l: log p(x | z) = sum_d x_d l_d - softplus(l_d)
    (= -BCE-with-logits, what torch.distributions.Bernoulli computes, without its broadcast
    copies). Draws z exactly as ``model.log_weights`` does, so both give the same numbers for the
    same torch seed (a test checks it). Returns (K, B) nats.
    """
    import torch.nn.functional as F

    q_z = model.posterior(x)
    z = q_z.rsample((num_samples,))
    logits = model.decoder(z)
    log_p_x_given_z = (logits * x).sum(-1) - F.softplus(logits).sum(-1)
    return log_p_x_given_z + model.prior().log_prob(z) - q_z.log_prob(z)


def log_weights_fn(model):
    """The fastest exact log-weight function for ``model``: the Bernoulli path or model.log_weights."""
    from aevb.likelihoods import BernoulliLikelihood

    if isinstance(model.likelihood_module, BernoulliLikelihood):
        return lambda x, k: bernoulli_log_weights(model, x, k)
    return model.log_weights


def iwae_bound(model, x, k: int, chunk: int, batch_size: int, log_weights=None):
    """Per-example L_k = log (1/k) sum_j w_j, w_j = p(x, z_j) / q(z_j | x), z_j ~ q(z | x), in nats.

    The k samples are drawn ``chunk`` at a time (``log_weights(x, n)``, default
    ``model.log_weights``) and combined exactly: L_k = logsumexp over all chunks' log w - log k.
    Returns a float64 tensor (N,).
    """
    import torch

    log_weights = log_weights or model.log_weights
    out = []
    for i in range(0, len(x), batch_size):
        xb = x[i:i + batch_size]
        parts = [torch.logsumexp(log_weights(xb, min(chunk, k - j)).double(), dim=0)
                 for j in range(0, k, chunk)]
        out.append(torch.logsumexp(torch.stack(parts), dim=0) - math.log(k))
    return torch.cat(out)


def active_units(model, x, threshold: float = 1e-2) -> tuple[int, list[float]]:
    """Burda et al.'s activity A_u = Cov_x(E_{q(u|x)}[u]); a unit is active when A_u > threshold."""
    activity = model.posterior(x).mean.double().var(dim=0)
    return int((activity > threshold).sum()), [float(a) for a in activity]


def evaluate_run(run_dir: str, k: int = 5000, seed: int = 1234, chunk: int = 500, batch_size: int = 20,
                 limit: int = 0, device: str = "cpu", block: int = 500, name: str = "iwae_eval.json") -> dict:
    """L_k and active units of a trained run on its test split (binarized once, seeded).

    Writes ``iwae_eval.json`` after every ``block`` test images (``"complete": false`` and the
    count so far until the last), so an evaluation stopped early still leaves an honest partial
    result over the first n test images.
    """
    import torch

    from aevb.checkpoint import load_run
    from aevb.data import build_datasets, prepare_batch

    cfg, model, _ = load_run(run_dir, which="last", device=device)
    model.eval()
    splits, info = build_datasets(cfg.data, cfg.model.likelihood)
    x = splits.test[:limit] if limit else splits.test
    x = prepare_batch(x.to(device), info.binarization, torch.Generator(device=device).manual_seed(seed))
    with torch.no_grad():
        num_active, activity = active_units(model, x)
    torch.manual_seed(seed)
    start, parts = time.time(), []
    for i in range(0, len(x), block):
        with torch.no_grad():
            parts.append(iwae_bound(model, x[i:i + block], k, chunk, batch_size, log_weights_fn(model)))
        result = eval_result(torch.cat(parts), k, seed, len(splits.test), num_active, activity, time.time() - start, info)
        Path(run_dir, name).write_text(json.dumps(result, indent=2) + "\n")
    return result


def eval_result(log_px, k, seed, total, num_active, activity, seconds, info) -> dict:
    n = len(log_px)
    return {"k": k, "n": n, "complete": n == total, "test_size": total, "seed": seed, "log_px": float(log_px.mean()),
            "log_px_se": float(log_px.std() / math.sqrt(n)) if n > 1 else 0.0, "nll": -float(log_px.mean()),
            "active_units": num_active, "activity": activity, "eval_seconds": seconds,
            "binarization": f"test images binarized once with seed {seed}" if info.binarization == "dynamic"
            else info.binarization}


def table(out: str) -> str:
    """Markdown rows for every run under ``out`` that has iwae_eval.json."""
    lines = ["| row | epochs | examples | train time | test L_k (nats) | -log p(x) | paper | gap | active units | L_k time |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for run_dir in sorted(Path(out).glob("*-k*")):
        ev_path = run_dir / "iwae_eval.json"
        if not ev_path.is_file():
            continue
        ev = json.loads(ev_path.read_text())
        records, summary = read_run(run_dir)
        row, k = run_dir.name.split("-k")
        key = (row, int(k))
        paper = PAPER_NLL.get(key, float("nan"))
        seconds = summary["train_seconds"] if summary else (records[-1].get("time_s", 0) if records else 0)
        lines.append(f"| {row.upper()} k={k} | {summary['epochs'] if summary else '?'} | "
                     f"{records[-1]['examples'] if records else 0:,} | {seconds / 60:.1f} min | "
                     f"{ev['log_px']:.2f} ± {ev['log_px_se']:.2f} | {ev['nll']:.2f} | {paper:.2f} | "
                     f"{ev['nll'] - paper:+.2f} | {ev['active_units']} | {ev['eval_seconds'] / 60:.1f} min |"
                     + ("" if ev.get("complete", True) else f" first {ev['n']:,} test images only"))
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--row", choices=("vae", "iwae"), help="train one row")
    p.add_argument("--k", type=int, default=None, help="samples of the training bound (vae: 1; iwae: 5 or 50)")
    p.add_argument("--epochs", type=int, default=3, help="passes over the 59,600 images (the paper: 3280)")
    p.add_argument("--out", default="runs/iwae")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--device", default="cpu")
    p.add_argument("--eval-k", type=int, default=5000, help="samples of the test bound L_k")
    p.add_argument("--eval-limit", type=int, default=0, help="evaluate only the first N test images (0: all)")
    p.add_argument("--eval-file", default="iwae_eval.json", help="name of the evaluation's JSON in the run directory")
    p.add_argument("--no-eval", action="store_true", help="train only; evaluate later with --evaluate RUN_DIR")
    p.add_argument("--evaluate", metavar="RUN_DIR", help="only evaluate a trained run")
    p.add_argument("--table", action="store_true", help="print the markdown table of OUT's evaluated runs")
    p.add_argument("--full", action="store_true", help="the paper's budget: 3280 epochs, rows vae k=1, iwae k=5, k=50")
    p.add_argument("--tiny", action="store_true", help="smoke run on sklearn digits")
    args = p.parse_args(argv)
    threads_env(args.threads)
    if args.table:
        print(table(args.out))
        return 0
    if args.evaluate:
        result = evaluate_run(args.evaluate, args.eval_k, limit=args.eval_limit, device=args.device, name=args.eval_file)
        print(json.dumps({k: v for k, v in result.items() if k != "activity"}))
        return 0
    if args.full:
        rows, args.epochs = FULL_ROWS, 3280
    elif args.row:
        rows = ((args.row, args.k if args.k is not None else (1 if args.row == "vae" else 50)),)
    else:
        p.error("give --row (with --k), --full, --evaluate RUN_DIR or --table")
    from aevb.train import train
    for row, k in rows:
        cfg = row_config(row, k, args.epochs, args.out, args.seed, args.threads, args.device, args.tiny)
        run_dir = train(cfg)
        if args.no_eval:
            continue
        print(json.dumps({k_: v for k_, v in evaluate_run(str(run_dir), args.eval_k, limit=args.eval_limit,
                                                          device=args.device).items() if k_ != "activity"}))
    print(table(args.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
