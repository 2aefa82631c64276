"""Figures for a run directory: draw with ``plots`` and save PNGs under ``run_dir/plots``."""

from __future__ import annotations

from pathlib import Path

import torch


def write_basic_plots(model, splits, info, run_dir: Path, seed: int) -> None:
    """Reconstructions of the first test images and decoded prior samples, as PNGs in run_dir/plots."""
    from .plots import plot_reconstructions, plot_samples, save_figure

    plots = run_dir / "plots"
    plots.mkdir(exist_ok=True)
    device = next(model.parameters()).device
    x = splits.test[:50] if len(splits.test) else splits.train[:50]
    x = x.to(device)
    save_figure(plot_reconstructions(x.cpu(), model.reconstruct(x).cpu(), info.shape), plots / "reconstructions.png")
    g = torch.Generator(device=device).manual_seed(seed)
    save_figure(plot_samples(model.sample(100, generator=g).cpu(), info.shape), plots / "samples.png")
