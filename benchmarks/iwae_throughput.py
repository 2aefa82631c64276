"""Training throughput of the IWAE paper's model (784-200-200-50, tanh, IWAE bound k=5, batch 20), in one process.

Methods, run alternately (A B C A B C ...), one pass over the same images each time, same seed:

  aevb      aevb.training.loop.fit: the hand-derived IWAE gradient of aevb.speed.fastpath (K samples,
            normalised importance weights, two hidden layers per side) on oneDNN products, fused Adam
            called directly.
  autograd  the same trainer with train.fast_path off: gradients by autograd through objectives.iwae
            (what the trainer ran for this model before the fast path covered it).
  onednn    (with ``--methods ... onednn``) aevb with its products of 1 M multiply-adds or more on oneDNN
            instead of torch's mm (the line ``fastpath.ONEDNN_MIN_MACS`` draws at 20 M).
  plain     a plain PyTorch loop of the same model over in-memory tensors: nn.Sequential encoder and
            decoder, torch.distributions-free IWAE bound with logsumexp, default Adam (eps 1e-4).

With ``--layers 2`` the model is the paper's two-stochastic-layer one (784-200-200-z1 100, 100-100-z2 50,
tanh; preset iwae-mnist-2layer), aevb's gradient is aevb.speed.hierarchical's, and "plain" is the same
two-layer IWAE bound written out in plain PyTorch.

Prints the median, min and max examples/s of each (by CPU time of this process with one thread,
which other processes on the machine barely affect, and by wall clock) and aevb's ratio to each.

Usage: python benchmarks/iwae_throughput.py [--repeats 5] [--examples 6000] [--threads 1] [--layers 1]
"""

from __future__ import annotations

import argparse
import functools
import math
import statistics
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
from torch import nn

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "src"))

from train_throughput import clocks, load_images, rates  # noqa: E402

HIDDEN, LATENT, PIXELS, K, BATCH = [200, 200], 50, 784, 5, 20
LATENTS_2, STOCHASTIC_HIDDEN_2 = [100, 50], [100, 100]  # the two-layer model: z1, z2 and the z1 <-> z2 MLPs


def run_aevb(x_train: torch.Tensor, seed: int, fast_path: bool = True, layers: int = 1) -> tuple[float, float]:
    from aevb.config import RunConfig
    from aevb.data import DataInfo, Splits
    from aevb.speed.fastpath import FastElbo
    from aevb.training.distributed import DistContext
    from aevb.training.loop import Run, build_bound_module, build_state, fit
    from aevb.training.metrics import MetricsLog

    cfg = RunConfig()
    cfg.model.hidden, cfg.model.latent_dim = list(HIDDEN), LATENT
    if layers == 2:
        cfg.model.latent_dims, cfg.model.stochastic_hidden = list(LATENTS_2), list(STOCHASTIC_HIDDEN_2)
    cfg.objective.name, cfg.objective.num_samples = "iwae", K
    cfg.train.epochs, cfg.train.batch_size, cfg.train.seed, cfg.train.quiet = 1, BATCH, seed, True
    cfg.train.adam_eps, cfg.train.checkpoint_every, cfg.train.fast_path = 1e-4, 10**9, fast_path
    info = DataInfo(name="bench", shape=(28, 28), num_dims=PIXELS, support="binary", binarization="dynamic")
    empty = x_train[:0]
    splits = Splits(x_train, empty, empty)
    ts = build_state(cfg, splits, info, torch.device("cpu"))
    module = build_bound_module(ts.model, cfg)
    assert isinstance(module, FastElbo) == fast_path, "the fast path does not cover this model"
    with tempfile.TemporaryDirectory() as tmp:
        run = Run(cfg, splits, info, Path(tmp), DistContext(), MetricsLog(Path(tmp) / "m.jsonl", enabled=False))
        start = clocks()
        fit(ts, module, run)
        return rates(len(x_train), start)


def run_aevb_small_onednn(x_train: torch.Tensor, seed: int, layers: int = 1, min_macs: int = 1_000_000):
    """aevb with products of ``min_macs`` multiply-adds or more on oneDNN (``fastpath.ONEDNN_MIN_MACS``,
    20 M by default, which keeps every product of this model on torch's mm)."""
    from aevb.speed import fastpath

    default = fastpath.ONEDNN_MIN_MACS
    fastpath.ONEDNN_MIN_MACS = min_macs
    try:
        return run_aevb(x_train, seed, layers=layers)
    finally:
        fastpath.ONEDNN_MIN_MACS = default


def run_autograd(x_train: torch.Tensor, seed: int, layers: int = 1) -> tuple[float, float]:
    return run_aevb(x_train, seed, fast_path=False, layers=layers)


def mlp(sizes: list[int]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for a, b in zip(sizes[:-1], sizes[1:]):
        layers += [nn.Linear(a, b), nn.Tanh()]
    return nn.Sequential(*layers[:-1])


def run_plain(x_train: torch.Tensor, seed: int) -> tuple[float, float]:
    """A plain PyTorch IWAE loop: log w_k = log p(x|z_k) + log p(z_k) - log q(z_k|x), bound = logmeanexp_k."""
    torch.manual_seed(seed)
    enc, dec = mlp([PIXELS, *HIDDEN, 2 * LATENT]), mlp([LATENT, *reversed(HIDDEN), PIXELS])
    optimizer = torch.optim.Adam([*enc.parameters(), *dec.parameters()], lr=1e-3, eps=1e-4)
    start = clocks()
    perm = torch.randperm(len(x_train))
    for i in range(0, len(x_train), BATCH):
        x = torch.bernoulli(x_train[perm[i:i + BATCH]])
        mu, log_var = enc(x).chunk(2, -1)
        eps = torch.randn(K, *mu.shape)
        z = mu + eps * torch.exp(0.5 * log_var)
        logits = dec(z)
        log_px = -nn.functional.binary_cross_entropy_with_logits(logits, x.expand_as(logits), reduction="none").sum(-1)
        log_ratio = 0.5 * (eps.pow(2) - z.pow(2) + log_var).sum(-1)  # log p(z) - log q(z|x)
        bound = torch.logsumexp(log_px + log_ratio, 0) - math.log(K)
        loss = -bound.mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return rates(len(x_train), start)


def run_plain_two_layer(x_train: torch.Tensor, seed: int) -> tuple[float, float]:
    """A plain PyTorch two-layer IWAE loop: log w_k = log p(x|z1) + log p(z1|z2) + log p(z2) - log q(z1|x)
    - log q(z2|z1), each conditional a diagonal Gaussian from a tanh MLP (Bernoulli for x)."""
    torch.manual_seed(seed)
    (d1, d2), sh = LATENTS_2, STOCHASTIC_HIDDEN_2
    enc, up = mlp([PIXELS, *HIDDEN, 2 * d1]), mlp([d1, *sh, 2 * d2])
    down, dec = mlp([d2, *reversed(sh), 2 * d1]), mlp([d1, *reversed(HIDDEN), PIXELS])
    nets = [enc, up, down, dec]
    optimizer = torch.optim.Adam([p for n in nets for p in n.parameters()], lr=1e-3, eps=1e-4)

    def log_normal(z, mu, log_var):  # up to -D/2 log(2 pi), which cancels between p and q
        return -0.5 * ((z - mu) ** 2 / log_var.exp() + log_var).sum(-1)

    start = clocks()
    perm = torch.randperm(len(x_train))
    for i in range(0, len(x_train), BATCH):
        x = torch.bernoulli(x_train[perm[i:i + BATCH]])
        mu1, lv1 = enc(x).chunk(2, -1)
        z1 = mu1 + torch.randn(K, *mu1.shape) * torch.exp(0.5 * lv1)
        mu2, lv2 = up(z1).chunk(2, -1)
        z2 = mu2 + torch.randn(K, *mu2.shape) * torch.exp(0.5 * lv2)
        m1, plv1 = down(z2).chunk(2, -1)
        logits = dec(z1)
        log_px = -nn.functional.binary_cross_entropy_with_logits(logits, x.expand_as(logits), reduction="none").sum(-1)
        log_w = (log_px + log_normal(z1, m1, plv1) - 0.5 * (z2 ** 2).sum(-1)
                 - log_normal(z1, mu1, lv1) - log_normal(z2, mu2, lv2))
        loss = -(torch.logsumexp(log_w, 0) - math.log(K)).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return rates(len(x_train), start)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=5, help="passes per method (alternating)")
    parser.add_argument("--examples", type=int, default=6000, help="training images per pass")
    parser.add_argument("--methods", nargs="+", default=["autograd", "plain"],
                        help="baselines besides aevb: autograd, plain, and onednn (aevb with every product of"
                             " 1 M multiply-adds or more on oneDNN, to re-check fastpath.ONEDNN_MIN_MACS)")
    parser.add_argument("--layers", type=int, choices=(1, 2), default=1,
                        help="stochastic layers: 1 (784-200-200-50) or 2 (the paper's 100 + 50 model)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    images, source = load_images(args.examples)
    x_train = torch.from_numpy(images.reshape(len(images), -1).astype(np.float32) / 255.0)
    print(f"data: {source}, {len(images)} images; torch {torch.__version__}; {args.threads} thread(s); "
          f"{'784-200-200-50' if args.layers == 1 else '784-200-200-100, 100-100-50'} tanh, IWAE k={K}, batch {BATCH}")
    two = args.layers == 2
    methods = [("aevb", functools.partial(run_aevb, layers=args.layers)),
               ("autograd", functools.partial(run_autograd, layers=args.layers)),
               ("plain", run_plain_two_layer if two else run_plain),
               ("onednn", functools.partial(run_aevb_small_onednn, layers=args.layers))]
    methods = [m for m in methods if m[0] == "aevb" or m[0] in args.methods]
    wall = {name: [] for name, _ in methods}
    cpu = {name: [] for name, _ in methods}
    for r in range(args.repeats):
        for name, fn in methods:
            w, c = fn(x_train, seed=r)
            wall[name].append(w)
            cpu[name].append(c)
    for clock, results in (("CPU time of this process", cpu), ("wall clock", wall)):
        if clock == "CPU time of this process" and args.threads != 1:
            continue
        print(f"  examples/s by {clock}:")
        for name, values in results.items():
            print(f"    {name:9s} median {statistics.median(values):8,.0f}  min {min(values):8,.0f}  "
                  f"max {max(values):8,.0f}")
        med = {k: statistics.median(v) for k, v in results.items()}
        print("    " + "   ".join(f"aevb / {k} = {med['aevb'] / med[k]:.2f}x" for k in med if k != "aevb"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
