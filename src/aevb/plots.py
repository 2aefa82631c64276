"""Figures from tensors: pure functions returning matplotlib figures; the caller saves them.

matplotlib is imported lazily, with the non-interactive Agg backend.
"""

from __future__ import annotations

import math

import torch


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def image_grid(images: torch.Tensor, shape: tuple, ncols: int, pad: int = 1) -> torch.Tensor:
    """Tile (N, num_dims) images of ``shape`` (H, W) or (C, H, W) into one (H', W'[, C]) array.

    Rows are filled left to right; unused cells stay at 1 (white border colour is 1 - 0 = ink-free).
    """
    n = images.shape[0]
    nrows = math.ceil(n / ncols)
    if len(shape) == 3:
        c, h, w = shape
        imgs = images.reshape(n, c, h, w).permute(0, 2, 3, 1)
    else:
        h, w = shape[-2], shape[-1]
        c = 1
        imgs = images.reshape(n, h, w, 1)
    grid = torch.ones(nrows * (h + pad) + pad, ncols * (w + pad) + pad, c)
    for k in range(n):
        r, col = divmod(k, ncols)
        grid[pad + r * (h + pad): pad + r * (h + pad) + h, pad + col * (w + pad): pad + col * (w + pad) + w] = imgs[k]
    return grid.squeeze(-1) if c == 1 else grid


def _show(ax, grid: torch.Tensor, title: str):
    g = grid.detach().cpu().clamp(0, 1).numpy()
    ax.imshow(g, cmap="gray_r" if g.ndim == 2 else None, vmin=0, vmax=1, interpolation="nearest")
    ax.set_title(title)
    ax.axis("off")


def plot_reconstructions(x: torch.Tensor, x_rec: torch.Tensor, shape: tuple, ncols: int = 10):
    """Data (top block) beside the means of p(x|z = posterior mean) (bottom block).

    Args:
        x: (N, num_dims) data in [0, 1]; x_rec: (N, num_dims) reconstruction means.
    """
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(10, 5 * math.ceil(len(x) / ncols) / ncols + 1))
    _show(axes[0], image_grid(x, shape, ncols), "data")
    _show(axes[1], image_grid(x_rec, shape, ncols), "reconstruction (mean of p(x|z))")
    fig.tight_layout()
    return fig


def plot_samples(samples: torch.Tensor, shape: tuple, ncols: int = 10, title: str = "samples: mean of p(x|z), z ~ p(z)"):
    """A grid of decoded prior samples (N, num_dims)."""
    plt = _pyplot()
    nrows = math.ceil(len(samples) / ncols)
    fig, ax = plt.subplots(figsize=(6, 6 * nrows / ncols + 0.5))
    _show(ax, image_grid(samples, shape, ncols), title)
    fig.tight_layout()
    return fig


def save_figure(fig, path) -> None:
    """Save a figure as PNG and close it."""
    plt = _pyplot()
    fig.savefig(path, dpi=100)
    plt.close(fig)
