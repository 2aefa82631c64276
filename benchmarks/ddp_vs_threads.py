"""Two CPU cores, three ways: 2-process torchrun DDP (gloo) vs one process with two threads vs one with one.

For each model, each way trains ``--epochs`` epochs on the bundled mnist5k digits (4,000 training
images) and the training examples/s of the last epoch are read from the run's metrics.jsonl (the
trainer's own clock: steps only, no start-up, no evaluation). The ways alternate (A B C A B C ...).

  ddp2        torchrun --nproc_per_node=2 -m aevb train --threads 1 ...   (DDP: autograd path, gradients all-reduced)
  threads2    python -m aevb train --threads 2 ...                        (one process: the fast path, 2 OpenMP threads)
  threads1    python -m aevb train --threads 1 ...                        (one process, one thread: the default)

Models: "aevb" 784-500-20, ELBO, batch 100; "iwae" 784-200-200-50, IWAE k=5, batch 20.

Usage: python benchmarks/ddp_vs_threads.py [--repeats 2] [--epochs 2] [--models aevb iwae]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
SRC = HERE.parent / "src"
MODELS = {
    "aevb": ["--hidden", "500", "--latent-dim", "20", "--batch-size", "100"],
    "iwae": ["--hidden", "200,200", "--latent-dim", "50", "--batch-size", "20", "--objective", "iwae", "--samples", "5"],
}
WAYS = {
    "ddp2": ([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "aevb"], 1),
    "threads2": ([sys.executable, "-m", "aevb"], 2),
    "threads1": ([sys.executable, "-m", "aevb"], 1),
}


def run(way: str, model: str, epochs: int) -> float:
    """Training examples/s of the last epoch (metrics.jsonl) of one run."""
    prefix, threads = WAYS[way]
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads), MPLBACKEND="Agg")
    env["PYTHONPATH"] = str(SRC) + os.pathsep + env.get("PYTHONPATH", "")
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "run"
        cmd = [*prefix, "train", "--data", "mnist5k", "--epochs", str(epochs), "--threads", str(threads),
               "--out", str(out), "--set", "train.quiet=true", *MODELS[model]]
        done = subprocess.run(cmd, env=env, capture_output=True, text=True)
        if done.returncode != 0:
            raise SystemExit(f"{way} {model} failed ({done.returncode}):\n{done.stderr[-3000:]}")
        records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if line.strip()]
    rates = [r["examples_per_s"] for r in records if "examples_per_s" in r]
    return rates[-1]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--ways", nargs="+", default=list(WAYS), choices=list(WAYS))
    args = parser.parse_args(argv)
    print(f"os.cpu_count() = {os.cpu_count()}; load average {os.getloadavg()[0]:.1f} at the start")
    for model in args.models:
        results: dict[str, list[float]] = {way: [] for way in args.ways}
        for _ in range(args.repeats):
            for way in args.ways:
                results[way].append(run(way, model, args.epochs))
        print(f"{model}: training examples/s (last epoch; median, min, max of {args.repeats})")
        for way, values in results.items():
            print(f"  {way:9s} {statistics.median(values):8,.0f}  {min(values):8,.0f}  {max(values):8,.0f}")
        best = max(results, key=lambda w: statistics.median(results[w]))
        print(f"  fastest: {best}")
    print(f"load average {os.getloadavg()[0]:.1f} at the end")
    return 0


if __name__ == "__main__":
    sys.exit(main())
