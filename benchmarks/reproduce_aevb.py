"""Reproduce figure 2 of Kingma & Welling (2014), Auto-Encoding Variational Bayes.

Figure 2 plots the lower bound per datapoint (ELBO, nats) on the training and the test set
against the number of training examples seen (log axis), for MNIST with Z in {3, 5, 10, 20, 200}
and Frey Face with Z in {2, 5, 10, 20}. The paper's settings (sec. 5, appendix C):

- MNIST: 784-500-Z-500-784, tanh, Bernoulli decoder, dynamic binarization here;
- Frey Face: 560-200-Z-200-560, tanh, Gaussian decoder with sigmoid mean and a variance predicted
  per example (``model.sigma = "predicted"``);
- Adagrad, global step size 0.01 (from the paper's {0.01, 0.02, 0.1}), minibatches M = 100,
  L = 1 sample of z, the analytic-KL ELBO (estimator B), and the N(0, I) prior on the parameters:
  ``train.weight_decay = 1`` adds ||theta||^2 / (2 N) to the per-example loss (docs/training.md).

One invocation trains one panel (a data set and a latent size) and writes a run directory
``OUT/<data>-z<Z>``; ``--plot`` draws the figure from whatever run directories exist (their
``metrics.jsonl`` grows during training, so it can be drawn while runs are going).

    python benchmarks/reproduce_aevb.py --panel mnist:20 --examples 1e7 --out runs/aevb
    python benchmarks/reproduce_aevb.py --plot --out runs/aevb --figure docs/figures/aevb_figure2.png

What the curves are (see docs/results.md): MNIST trains on the 50,000 images of the ``standard``
split; its "test" curve is the ELBO of the 10,000 held-out training images (valid split),
computed after every epoch, and the final test-set (t10k) ELBO is marked at the end. Frey Face
trains on 80% of the 1,965 faces; its held-out curve is a seeded 10% (valid split) and the
other 10% is the test set marked at the end.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _recipes import TINY_NUM_TRAIN, config_from, curves, data_dir, read_run, threads_env, tiny_sections  # noqa: E402

MNIST_Z = (3, 5, 10, 20, 200)
FREY_Z = (2, 5, 10, 20)
PANELS = [("mnist", z) for z in MNIST_Z] + [("frey", z) for z in FREY_Z]
NUM_TRAIN = {"mnist": 50_000, "frey": 1_573}  # training examples of the splits used below


def panel_config(data: str, latent_dim: int, examples: float, out: str, seed: int = 0, threads: int = 1,
                 tiny: bool = False):
    """The RunConfig of one panel of figure 2, trained for at least ``examples`` training examples."""
    num_train = NUM_TRAIN[data]
    epochs = max(1, math.ceil(examples / num_train))
    train = {"epochs": epochs, "weight_decay": 1.0, "seed": seed, "threads": threads, "quiet": True,
             "tensorboard": False, "device": "cpu"}
    if data == "mnist":
        preset = "aevb-mnist"
        sections = {"data": {"split": "standard", "data_dir": data_dir()}}
    else:
        preset = "aevb-frey"
        # 1,965 faces: 10% validation curve, 10% test, 80% (1,573) training. 16 steps per epoch,
        # so validate every 100 steps (1e4 examples) and checkpoint rarely.
        sections = {"data": {"valid_fraction": 0.1, "test_fraction": 0.1, "data_dir": data_dir()}}
        train.update(eval_every=100, checkpoint_every=5000)
    sections["model"] = {"latent_dim": latent_dim}
    sections["train"] = train
    sections["out"] = str(Path(out) / f"{data}-z{latent_dim}")
    cfg = config_from(preset, sections)
    if tiny:  # the same recipe on sklearn's digits, ``examples`` counted in digits
        from aevb.config import update
        update(cfg, tiny_sections())
        if data == "frey":  # digits are [0, 1] images: a Gaussian decoder still applies
            update(cfg, {"data": {"binarize": "none"}})
        update(cfg, {"train": {"eval_every": 0, "checkpoint_every": 0,
                               "epochs": max(1, math.ceil(examples / TINY_NUM_TRAIN))}})
    return cfg


def train_panel(args) -> Path:
    """Train a panel to ``--examples``; a panel whose run directory has checkpoints is resumed and
    trained on to the new length (Adagrad with a constant step size: the same computation as one
    longer run), so a panel can be brought to 3e6 examples first and to 1e7 later."""
    from aevb.config import RunConfig
    from aevb.training.checkpoint import list_checkpoints
    from aevb.training.loop import train

    data, z = args.panel.split(":")
    cfg = panel_config(data, int(z), float(args.examples), args.out, args.seed, args.threads, args.tiny)
    run_dir = Path(cfg.out)
    if (run_dir / "config.json").is_file() and list_checkpoints(run_dir):
        epochs = cfg.train.epochs
        cfg = RunConfig.load(run_dir / "config.json")
        cfg.train.epochs = epochs
        cfg.out = str(run_dir)
        return train(cfg, resume=True)
    return train(cfg)


# -- the figure --------------------------------------------------------------------------------

def plot_figure(out: str, figure: str, min_examples: float = 1e5, max_examples: float = 1e7) -> Path:
    """Figure 2's layout: MNIST panels in the top row, Frey Face in the bottom row.

    Every panel shares the x axis (log, ``min_examples`` to the larger of ``max_examples`` and the
    longest run) and each row shares its y axis, as in the paper, so the latent sizes compare.
    """
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [[("mnist", z) for z in MNIST_Z], [("frey", z) for z in FREY_Z]]
    data = {(d, z): panel_points(Path(out) / f"{d}-z{z}", min_examples) for d, z in PANELS}
    longest = max([max(xs) for pts in data.values() for xs, _ in pts["curves"].values() if xs] + [max_examples])
    fig, axes = plt.subplots(2, 5, figsize=(15, 5.6))
    for r, row in enumerate(rows):
        ys = [v for d, z in row for _, vs in data[(d, z)]["curves"].values() for v in vs]
        ys += [data[(d, z)]["test"][1] for d, z in row if data[(d, z)]["test"]]
        pad = 0.05 * (max(ys) - min(ys) + 1e-9) if ys else 0
        for col, (d, z) in enumerate(row):
            ax = axes[r, col]
            draw_panel(ax, data[(d, z)], f"{'MNIST' if d == 'mnist' else 'Frey Face'}, $N_z$ = {z}",
                       "held-out (10k valid)" if d == "mnist" else "held-out (10%)")
            ax.set_xlim(min_examples, longest * 1.1)
            if ys:
                ax.set_ylim(min(ys) - pad, max(ys) + pad)
        axes[r, 0].set_ylabel("ELBO per datapoint (nats)")
    axes[1, 4].axis("off")
    axes[1, 4].text(0.0, 0.5, "AEVB (Adagrad 0.01, M=100, L=1,\nN(0, I) weight prior), 1 CPU thread.\n"
                    "solid: train (epoch running mean)\ndashed: held-out split\n"
                    "x: final test-set ELBO", fontsize=9, va="center")
    fig.tight_layout()
    Path(figure).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(figure, dpi=70)
    plt.close(fig)
    return Path(figure)


def panel_points(run_dir: Path, min_examples: float) -> dict:
    """{"curves": {"train"|"valid": (examples, elbo)} from ``min_examples`` on, "test": (examples, elbo) or None}."""
    records, summary = read_run(run_dir)
    pts = {}
    for key, (xs, vs) in curves(records).items():
        keep = [(x, v) for x, v in zip(xs, vs) if x >= min_examples]
        pts[key] = ([p[0] for p in keep], [p[1] for p in keep])
    test = None
    if summary and records:
        at = max(r["examples"] for r in records if r.get("epoch", 0) <= summary["epochs"])
        test = (at, summary["test"]["elbo"])
    return {"curves": pts, "test": test}


def draw_panel(ax, points: dict, title: str, held_out: str) -> None:
    ax.set_xscale("log")
    ax.set_title(title, fontsize=10)
    ax.set_xlabel("training examples seen")
    ax.grid(True, which="both", alpha=0.3)
    drawn = False
    for key, style, label in (("train", "-", "train"), ("valid", "--", held_out)):
        xs, vs = points["curves"][key]
        if xs:
            ax.plot(xs, vs, style, label=label)
            drawn = True
    if points["test"]:
        ax.plot([points["test"][0]], [points["test"][1]], "kx", label="test set")
    if drawn:
        ax.legend(fontsize=7, loc="lower right")
    else:
        ax.text(0.5, 0.5, "no run yet", transform=ax.transAxes, ha="center")


def summary_table(out: str) -> str:
    """Markdown rows: per panel, examples seen, last train and held-out ELBO, test ELBO, training time."""
    lines = ["| panel | examples seen | epochs | train ELBO (last epoch) | held-out ELBO (last) | test ELBO | "
             "training time |", "| --- | --- | --- | --- | --- | --- | --- |"]
    for data, z in PANELS:
        records, summary = read_run(Path(out) / f"{data}-z{z}")
        if not records:
            lines.append(f"| {data} Z={z} | not run | | | | | |")
            continue
        c = curves(records)
        train = f"{c['train'][1][-1]:.2f}" if c["train"][1] else ""
        held = f"{c['valid'][1][-1]:.2f}" if c["valid"][1] else ""
        last = records[-1]
        test = (f"{summary['test']['elbo']:.2f} ± {summary['test']['elbo_se']:.2f} (epoch {summary['epochs']})"
                if summary else "")
        lines.append(f"| {data} Z={z} | {last['examples']:.3g} | {last['epoch']} | {train} | {held} | {test} | "
                     f"{last.get('time_s', 0) / 60:.1f} min |")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--panel", help="DATA:Z, one of " + ", ".join(f"{d}:{z}" for d, z in PANELS))
    p.add_argument("--examples", default="1e7", help="training examples to see (rounded up to whole epochs)")
    p.add_argument("--out", default="runs/aevb", help="folder of the panels' run directories")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--tiny", action="store_true", help="smoke run on sklearn digits (--examples counts digits)")
    p.add_argument("--plot", action="store_true", help="draw the figure from OUT's run directories")
    p.add_argument("--summary", action="store_true", help="print a markdown table of OUT's panels")
    p.add_argument("--figure", default="docs/figures/aevb_figure2.png")
    p.add_argument("--min-examples", type=float, default=1e5, help="left end of the x axis")
    args = p.parse_args(argv)
    threads_env(args.threads)
    if args.summary:
        print(summary_table(args.out))
        return 0
    if args.plot:
        print(plot_figure(args.out, args.figure, args.min_examples))
        return 0
    if not args.panel or tuple(args.panel.split(":")) not in {(d, str(z)) for d, z in PANELS}:
        p.error(f"--panel must be one of {', '.join(f'{d}:{z}' for d, z in PANELS)} (got {args.panel!r})")
    print(train_panel(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
