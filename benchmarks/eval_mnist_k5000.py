"""Time of the literature's protocol, log p(x) by the IWAE bound with K=5000 on the 10,000 MNIST
test images, for the 784-200-200-50 tanh model (the IWAE paper's one-stochastic-layer architecture) with
aevb's evaluator; targets: under 3 minutes (issue 10), 10 minutes (issue 6)
on two threads of a 2-core machine.

    python benchmarks/eval_mnist_k5000.py --threads 2            # the whole test set
    python benchmarks/eval_mnist_k5000.py --threads 2 --images 500   # a part, extrapolated

Weights are random with the output bias set from the data mean: the time does not depend on
training. Needs ../shared/data/mnist (prints a skip message otherwise). Prints; not a test.
"""

from __future__ import annotations

import argparse
import time

import torch
from eval_throughput import load_test_images, make_model

from aevb.inference.evaluate import importance_sample


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--images", type=int, default=10000, help="test images to evaluate (time is extrapolated to 10,000)")
    p.add_argument("--k", type=int, default=5000)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--memory-mb", type=int, default=512)
    p.add_argument("--omp", action="store_true", help="use torch's OpenMP threads instead of chunk workers")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    x, source = load_test_images(args.images)
    if not source.startswith("MNIST"):
        print("skipped: MNIST test images not found (../shared/data/mnist)")
        return
    model = make_model([200, 200], 50, x)
    start = time.perf_counter()
    workers = 1 if args.omp else args.threads
    log_px = importance_sample(model, x, k=args.k, memory_mb=args.memory_mb, progress=False, workers=workers)["log_px"]
    seconds = time.perf_counter() - start
    full = seconds * 10000 / len(x)
    how = 'OpenMP threads' if args.omp else 'chunk workers'
    print(f"784-200-200-50, K={args.k}, {len(x)} images ({source}), {args.threads} thread(s) as {how}: {seconds:.1f} s, "
          f"{len(x) * args.k / seconds:,.0f} samples/s; 10,000 images: {full:.0f} s = {full / 60:.1f} min "
          f"({'extrapolated' if len(x) < 10000 else 'measured'}); mean L_K of the random model {float(log_px.mean()):.2f} nats")


if __name__ == "__main__":
    main()
