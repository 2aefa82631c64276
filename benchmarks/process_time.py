"""Whole-process time of ``aevb train`` next to a plain in-memory PyTorch script, on real MNIST.

Both run as fresh processes (interpreter start, imports, reading the data, training, the test
ELBO), alternately (A B A B ...), with one thread each:

  aevb   ``python -m aevb.cli train --data mnist --set data.data_dir=DIR --epochs E --out TMP``:
         the AEVB MNIST model (784-500-20, tanh, Bernoulli, batch 100, Adam) with everything a run
         does: validation, checkpoints, the test ELBO, summary.json and the figures.
  plain  the same model, epochs and batch size as a plain script: read the IDX files with numpy,
         default Adam, a randperm/index/bernoulli loop over in-memory tensors, then the test ELBO.

For aevb it also splits the time into "command start -> first step", "training" (first step
start -> last step end) and "last step -> exit": a small probe wraps the trainer's step function
(timestamps only; the step itself is unchanged). The fixed cost is the sum of the first and last
part. The ratio plain / aevb of whole-process wall clock is the speed-up. The same split is also
given in CPU time of the aevb process, which other processes on a busy machine disturb less.
``--compare-src OTHER/src`` times another checkout the same way (before/after).

Usage: python benchmarks/process_time.py [--epochs 2] [--repeats 3] [--data-dir ../shared/data]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
SRC = HERE.parent / "src"

# Runs inside the aevb process before the CLI: wraps the step functions to time the first and last step.
PROBE = r"""
import atexit, json, sys, time
marks = {}
def wrap(owner, name):
    inner = getattr(owner, name)
    def timed(*args, **kwargs):
        if "first_step" not in marks:
            marks["first_step"], marks["first_step_cpu"] = time.time(), time.process_time()
        out = inner(*args, **kwargs)
        marks["last_step"], marks["last_step_cpu"] = time.time(), time.process_time()
        return out
    setattr(owner, name, timed)
import aevb.training.loop as loop
import aevb.speed.fastpath as fastpath
wrap(loop, "optimizer_step")
for owner in (getattr(fastpath, n) for n in dir(fastpath)):
    if isinstance(owner, type) and "optimizer_step" in vars(owner):
        wrap(owner, "optimizer_step")
def report():
    marks["exit_cpu"] = time.process_time()
    print("PROBE " + json.dumps(marks), file=sys.stderr)
atexit.register(report)
import aevb.cli as cli
sys.argv = ["aevb"] + sys.argv[1:]
code = getattr(cli, "run", cli.main)()  # the program's entry (older checkouts: main)
sys.stdout.flush()
sys.exit(code)
"""

PLAIN = r"""
import gzip, sys, time
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

data_dir, epochs = sys.argv[1], int(sys.argv[2])
def read(name):
    with gzip.open(f"{data_dir}/mnist/{name}", "rb") as f:
        raw = f.read()
    return torch.from_numpy(np.frombuffer(raw, np.uint8, offset=16).reshape(-1, 784).astype(np.float32) / 255.0)
x_train, x_test = read("train-images-idx3-ubyte.gz"), read("t10k-images-idx3-ubyte.gz")
torch.manual_seed(0)
enc = nn.Sequential(nn.Linear(784, 500), nn.Tanh(), nn.Linear(500, 40))
dec = nn.Sequential(nn.Linear(20, 500), nn.Tanh(), nn.Linear(500, 784))
optimizer = torch.optim.Adam([*enc.parameters(), *dec.parameters()], lr=1e-3)
def elbo(x):
    mu, logvar = enc(x).chunk(2, -1)
    z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar)
    recon = F.binary_cross_entropy_with_logits(dec(z), x, reduction="none").sum(-1)
    return -(recon + 0.5 * (mu.pow(2) + logvar.exp() - 1 - logvar).sum(-1))
for epoch in range(epochs):
    perm = torch.randperm(len(x_train))
    for i in range(0, len(x_train), 100):
        loss = -elbo(torch.bernoulli(x_train[perm[i:i + 100]])).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
with torch.no_grad():
    test = torch.cat([elbo(torch.bernoulli(x_test[i:i + 1000])) for i in range(0, len(x_test), 1000)])
print(f"test ELBO {test.mean():.2f}")
"""


def child_cpu() -> float:
    """User + system CPU seconds of the finished child processes so far."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def environment(src: Path = SRC) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", MPLBACKEND="Agg")
    env["PYTHONPATH"] = str(src) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def run_aevb(data_dir: str, epochs: int, extra: list[str], src: Path = SRC) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-c", PROBE, "train", "--data", "mnist", "--set", f"data.data_dir={data_dir}",
               "--epochs", str(epochs), "--threads", "1", "--out", str(Path(tmp) / "run"), *extra]
        start, cpu = time.time(), child_cpu()
        done = subprocess.run(cmd, env=environment(src), capture_output=True, text=True)
        end, cpu = time.time(), child_cpu() - cpu
    if done.returncode != 0:
        raise SystemExit(f"aevb train failed ({done.returncode}):\n{done.stderr[-3000:]}")
    line = next(x for x in done.stderr.splitlines() if x.startswith("PROBE "))
    marks = json.loads(line[len("PROBE "):])
    test = next((x for x in done.stdout.splitlines() if x.startswith("test ELBO")), "?")
    return {"total": end - start, "to_first_step": marks["first_step"] - start,
            "training": marks["last_step"] - marks["first_step"], "after_last_step": end - marks["last_step"],
            "cpu_to_first_step": marks["first_step_cpu"], "cpu_training": marks["last_step_cpu"] - marks["first_step_cpu"],
            "cpu_after_last_step": marks["exit_cpu"] - marks["last_step_cpu"], "cpu": cpu, "test": test}


def run_plain(data_dir: str, epochs: int) -> dict:
    start, cpu = time.time(), child_cpu()
    done = subprocess.run([sys.executable, "-c", PLAIN, data_dir, str(epochs)], env=environment(),
                          capture_output=True, text=True)
    end, cpu = time.time(), child_cpu() - cpu
    if done.returncode != 0:
        raise SystemExit(f"plain script failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return {"total": end - start, "cpu": cpu, "test": done.stdout.strip()}


def default_data_dir() -> str:
    return next((str(p / "shared" / "data") for p in HERE.parents if (p / "shared" / "data" / "mnist").is_dir()), "")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--data-dir", default=default_data_dir(), help="folder holding mnist/*.gz (IDX)")
    parser.add_argument("--compare-src", default="", help="another checkout's src/ to time the same way (before/after)")
    parser.add_argument("--aevb-args", nargs=argparse.REMAINDER, default=[], help="more `aevb train` arguments")
    args = parser.parse_args(argv)
    if not args.data_dir:
        print("real MNIST not found (shared/data/mnist); pass --data-dir")
        return 2
    sources = {"aevb": SRC, **({"compared": Path(args.compare_src)} if args.compare_src else {})}
    results: dict[str, list[dict]] = {name: [] for name in [*sources, "plain"]}
    for r in range(args.repeats):
        for name, src in sources.items():
            a = run_aevb(args.data_dir, args.epochs, args.aevb_args, src)
            results[name].append(a)
            print(f"repeat {r + 1}: {name} {a['total']:.1f} s (start -> first step {a['to_first_step']:.2f} s, "
                  f"training {a['training']:.1f} s, last step -> exit {a['after_last_step']:.2f} s; CPU time "
                  f"{a['cpu_to_first_step']:.2f} + {a['cpu_training']:.1f} + {a['cpu_after_last_step']:.2f} s; "
                  f"{a['test']})", flush=True)
        p = run_plain(args.data_dir, args.epochs)
        results["plain"].append(p)
        print(f"repeat {r + 1}: plain {p['total']:.1f} s, CPU {p['cpu']:.1f} s ({p['test']})", flush=True)
    plain = statistics.median(x["total"] for x in results["plain"])
    plain_cpu = statistics.median(x["cpu"] for x in results["plain"])
    print(f"\nmedians of {args.repeats}, {args.epochs} epoch(s) of MNIST, one thread:")
    for name, src in sources.items():
        med = {k: statistics.median(x[k] for x in results[name])
               for k in ("total", "to_first_step", "training", "after_last_step", "cpu_to_first_step",
                         "cpu_training", "cpu_after_last_step", "cpu")}
        print(f"  {name} ({src}): {med['total']:.1f} s = start -> first step {med['to_first_step']:.2f} s + "
              f"training {med['training']:.1f} s + last step -> exit {med['after_last_step']:.2f} s "
              f"(fixed cost {med['to_first_step'] + med['after_last_step']:.2f} s); plain / {name} = "
              f"{plain / med['total']:.2f}x")
        print(f"    CPU time: {med['cpu']:.1f} s = start -> first step {med['cpu_to_first_step']:.2f} s + training "
              f"{med['cpu_training']:.1f} s + last step -> exit {med['cpu_after_last_step']:.2f} s (fixed cost "
              f"{med['cpu_to_first_step'] + med['cpu_after_last_step']:.2f} s); plain / {name} by CPU time = "
              f"{plain_cpu / med['cpu']:.2f}x")
    print(f"  plain script: {plain:.1f} s, CPU {plain_cpu:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
