"""Seconds for the K=5000 log-likelihood estimate (IWAE bound) of MNIST test images: aevb's
evaluator next to a straightforward implementation that replicates each image K times through
the encoder (with torch's own matrix products, as plain PyTorch code would), and the GEMM-limit
time of the same work (the model's matrix products at the same shapes, timed alone, with torch's
mm and with oneDNN: aevb's evaluator decodes with oneDNN where torch has it, see aevb.speed.gemm).
Models: the AEVB MNIST model (784-500-20, tanh) and 784-200-200-50 (tanh).

    OMP_NUM_THREADS=1 python benchmarks/eval_throughput.py --threads 1 --images 1000

With --threads N, aevb runs N chunk workers (single-threaded torch each); the replicate
implementation uses torch's N OpenMP threads, as plain code would; the GEMM limit is the
one-thread GEMM time divided by N (perfect scaling).

Weights are random with the output bias set from the data mean (timing does not depend on
training). Uses ../shared/data/mnist when present, else random binary images.
Prints; it is not a test. See docs/performance.md.
"""

from __future__ import annotations

import argparse
import gzip
import math
import statistics
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch

from aevb.config import ModelConfig
from aevb.inference.evaluate import choose_chunks, importance_sample
from aevb.models.vae import build_model

REPO = Path(__file__).resolve().parents[1]
MNIST_DIRS = [REPO.parent / "shared" / "data" / "mnist", Path("/work/shared/data/mnist")]
MODELS = {"aevb-784-500-20": ([500], 20), "iwae-784-200-200-50": ([200, 200], 50)}


def read_idx(path: Path) -> np.ndarray:
    b = gzip.open(path).read()
    nd = b[3]
    shape = np.frombuffer(b[4:4 + 4 * nd], ">u4").astype(int)
    return np.frombuffer(b[4 + 4 * nd:], np.uint8).reshape(shape)


def load_test_images(n: int, seed: int = 0) -> tuple[torch.Tensor, str]:
    """(n, 784) binarized test images (one seeded draw) and where they came from."""
    g = torch.Generator().manual_seed(seed)
    for folder in MNIST_DIRS:
        path = folder / "t10k-images-idx3-ubyte.gz"
        if path.exists():
            x = torch.from_numpy(read_idx(path)[:n].reshape(-1, 784).astype(np.float32) / 255)
            return torch.bernoulli(x, generator=g), f"MNIST test images from {folder}"
    return (torch.rand(n, 784, generator=g) < 0.13).float(), "random binary images (MNIST absent)"


def make_model(hidden: list[int], latent_dim: int, x: torch.Tensor):
    info = SimpleNamespace(shape=(28, 28), num_dims=784, support="binary", binarization="static")
    torch.manual_seed(0)
    cfg = ModelConfig(hidden=hidden, latent_dim=latent_dim, activation="tanh")
    return build_model(cfg, info, train_mean=x.mean(0)).eval()


@torch.no_grad()
def replicate_estimate(model, x: torch.Tensor, k: int) -> torch.Tensor:
    """The common implementation: each image copied K times, encoded K times, one logsumexp, with
    torch's own matrix products (nn.Linear), as plain PyTorch code runs them."""
    from aevb.speed import gemm

    out = torch.empty(len(x))
    with gemm.using("torch"):
        for i, xi in enumerate(x):
            log_w = model.log_weights(xi.expand(k, -1), 1)[0]  # (K,)
            out[i] = torch.logsumexp(log_w, 0) - math.log(k)
    return out


def gemm_limit_seconds(model, num_images: int, k: int, memory_mb: int, kernel: str = "torch") -> float:
    """Time of the evaluator's matrix products alone: the encoder once per image, the decoder on
    K samples per image, at the evaluator's block shapes. ``kernel``: "torch" times ``torch.mm``
    (MKL in x86 builds), "onednn" the same products through ``aevb.speed.gemm``'s oneDNN backend (what
    the evaluator's decoder uses where torch has it)."""
    from aevb.speed import gemm

    if kernel != "onednn":
        return _time_products(model, num_images, k, memory_mb, torch.mm)
    with gemm.using("onednn") as used:
        return _time_products(model, num_images, k, memory_mb, gemm.matmul) if used == "onednn" else math.nan


def _time_products(model, num_images: int, k: int, memory_mb: int, product) -> float:
    def linears(net):
        return [m for m in net.modules() if isinstance(m, torch.nn.Linear)]

    examples, block = choose_chunks(784, model.latent_dim, k, memory_mb)
    rows = examples * block
    num_blocks = math.ceil(num_images / examples) * math.ceil(k / block)
    total = 0.0
    for layers, m, reps in ((linears(model.encoder), num_images, 1), (linears(model.decoder), rows, num_blocks)):
        for lin in layers:
            a, w = torch.randn(m, lin.in_features), lin.weight.detach().T.contiguous()
            product(a, w)
            n = max(1, min(reps, 20))
            start = time.perf_counter()
            for _ in range(n):
                product(a, w)
            total += (time.perf_counter() - start) / n * reps
    return total


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--images", type=int, default=1000)
    p.add_argument("--k", type=int, default=5000)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--memory-mb", type=int, default=512)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--models", default=",".join(MODELS), help=f"comma-separated from {', '.join(MODELS)}")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    x, source = load_test_images(args.images)
    print(f"{args.images} images ({source}), K={args.k}, {args.threads} thread(s), torch {torch.__version__}")
    print(f"repeats alternate aevb, replicate, GEMM; times are the minimum (median) over {args.repeats} repeats")
    print("GEMM limit: the products alone, with torch's mm (MKL) / with oneDNN; 'of limit' = limit time / aevb time")
    print(f"{'model':<22} {'aevb s':>11} {'replicate s':>12} {'GEMM torch s':>13} {'GEMM oneDNN s':>14} {'speed-up':>9} "
          f"{'of limits':>11} {'max |diff|':>10}")
    for name in args.models.split(","):
        hidden, latent_dim = MODELS[name]
        model = make_model(hidden, latent_dim, x)
        times: dict[str, list] = {"aevb": [], "replicate": [], "gemm": [], "onednn": []}
        for _ in range(args.repeats):
            start = time.perf_counter()
            fast = importance_sample(model, x, k=args.k, memory_mb=args.memory_mb, progress=False,
                                     workers=args.threads)["log_px"]
            times["aevb"].append(time.perf_counter() - start)
            torch.manual_seed(0)
            start = time.perf_counter()
            slow = replicate_estimate(model, x, args.k)
            times["replicate"].append(time.perf_counter() - start)
            torch.set_num_threads(1)  # one thread's GEMM time / N: the ideal N-thread limit, free of OpenMP stalls
            times["gemm"].append(gemm_limit_seconds(model, args.images, args.k, args.memory_mb) / args.threads)
            times["onednn"].append(gemm_limit_seconds(model, args.images, args.k, args.memory_mb, "onednn") / args.threads)
            torch.set_num_threads(args.threads)
        best = {key: min(v) for key, v in times.items()}
        shown = {key: f"{min(v):.1f} ({statistics.median(v):.1f})" for key, v in times.items()}
        # different random draws: the two estimates agree to Monte Carlo error only
        diff = float((fast.float() - slow).abs().max())
        print(f"{name:<22} {shown['aevb']:>11} {shown['replicate']:>12} {shown['gemm']:>13} {shown['onednn']:>14} "
              f"{best['replicate'] / best['aevb']:8.2f}x {best['gemm'] / best['aevb']:5.2f}/{best['onednn'] / best['aevb']:.2f} "
              f"{diff:10.3f}")


if __name__ == "__main__":
    main()
