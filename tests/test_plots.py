"""Figures drawn from a tiny trained model: the PNGs are decoded and their layout measured
(cells of the image grids counted from the separator lines), the latent grids are compared with
scipy's normal quantiles, the activity order and the PCA with numpy computations."""

import math

import numpy as np
import pytest
import torch
from conftest import tiny_config
from PIL import Image
from scipy.stats import norm

from aevb.config import ModelConfig
from aevb.data import DataInfo, Splits
from aevb.models.vae import build_model
from aevb.outputs import figures, plots


def pad_rgb():
    """The colour the separator lines are drawn in (the same for the gray and gray_r maps)."""
    import matplotlib

    return np.array(matplotlib.colormaps["gray_r"](plots.PAD_VALUE)[:3]) * 255


def _runs(flags: np.ndarray) -> int:
    """Number of runs of consecutive True values."""
    f = flags.astype(int)
    return int(f[0] + np.sum(np.diff(f) == 1))


def grid_blocks(png_path) -> list[tuple[np.ndarray, np.ndarray]]:
    """(separator mask, RGB pixels) of each image grid in a PNG, left to right, cropped to its border.

    A grid panel is a block of columns holding many separator-coloured pixels; it runs from the
    first to the last pixel row that is separator colour from edge to edge.
    """
    img = np.asarray(Image.open(png_path).convert("RGB")).astype(float)
    mask = (np.abs(img - pad_rgb()) <= 3).all(-1)
    panels, cols = [], mask.sum(0) >= 10  # antialiased text can hit the colour in a few pixels
    starts = np.flatnonzero(np.diff(np.r_[0, cols.astype(int)]) == 1)
    ends = np.flatnonzero(np.diff(np.r_[cols.astype(int), 0]) == -1) + 1
    for c0, c1 in zip(starts, ends):
        full_rows = np.flatnonzero(mask[:, c0:c1].mean(1) > 0.98)
        if c1 - c0 < 5 or len(full_rows) < 2:
            continue
        rows = slice(full_rows[0], full_rows[-1] + 1)  # from the top to the bottom border
        panels.append((mask[rows, c0:c1], img[rows, c0:c1]))
    return panels


def grid_cells(png_path) -> list[tuple[int, int]]:
    """(rows, cols) of cells of each image grid in a PNG: k cells are bounded by k + 1 lines."""
    return [(_runs(m.all(1)) - 1, _runs(m.all(0)) - 1) for m, _ in grid_blocks(png_path)]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A digits model (latent_dim 4) trained for two epochs, its data and its run directory."""
    from aevb.data import build_datasets
    from aevb.training.checkpoint import load_run
    from aevb.training.loop import train
    from aevb.training.metrics import read_metrics

    run_dir = train(tiny_config(tmp_path_factory.mktemp("plots")))
    cfg, model, info = load_run(run_dir)
    splits, _ = build_datasets(cfg.data, cfg.model.likelihood)
    ctx = figures.FigureContext(model, splits, info, read_metrics(run_dir / "metrics.jsonl"), seed=0)
    return ctx, run_dir


def test_image_grid_places_cells_row_by_row_with_separators():
    imgs = torch.rand(7, 2 * 3)
    g = plots.image_grid(imgs, (2, 3), ncols=3, pad=1, pad_value=0.25, fill_value=0.0)
    assert g.shape == (3 * 3 + 1, 3 * 4 + 1)
    for k in range(7):
        r, c = divmod(k, 3)
        assert torch.equal(g[1 + 3 * r:3 + 3 * r, 1 + 4 * c:4 + 4 * c], imgs[k].reshape(2, 3))
    assert (g[0] == 0.25).all() and (g[:, 0] == 0.25).all() and (g[3] == 0.25).all() and (g[:, 4] == 0.25).all()
    assert (g[7:9, 5:8] == 0).all() and (g[7:9, 9:12] == 0).all()  # cells 8 and 9 are unused


def test_image_grid_of_colour_images_keeps_channels_last():
    imgs = torch.rand(4, 3 * 5 * 6)
    g = plots.image_grid(imgs, (3, 5, 6), ncols=2)
    assert g.shape == (2 * 6 + 1, 2 * 7 + 1, 3)
    assert torch.equal(g[1:6, 8:14], imgs[1].reshape(3, 5, 6).permute(1, 2, 0))


def test_training_writes_the_basic_figures_as_pngs(trained):
    _, run_dir = trained
    for name in set(figures.BASIC) - {"prior_components", "samples_per_class"}:  # learned priors, conditional models only
        with Image.open(run_dir / "plots" / f"{name}.png") as im:
            im.verify()
            assert im.format == "PNG"


def test_reconstruction_png_shows_data_and_reconstruction_grids_of_5_by_10(trained, tmp_path):
    ctx, _ = trained
    fig = figures.FIGURES["reconstructions"](ctx)
    assert [a.get_title() for a in fig.axes] == ["data", "reconstruction (mean of p(x|z))"]
    x = ctx.splits.test[:50]
    shown = torch.from_numpy(np.asarray(fig.axes[1].images[0].get_array()))
    expected = plots.image_grid(ctx.model.reconstruct(x), (8, 8), 10)
    assert torch.allclose(shown.float(), expected, atol=1e-6)  # the means, not a draw
    plots.save_figure(fig, tmp_path / "r.png")
    assert grid_cells(tmp_path / "r.png") == [(5, 10), (5, 10)]


def test_samples_png_is_a_10_by_10_grid_and_its_size_follows_figsize_and_dpi(trained, tmp_path):
    ctx, _ = trained
    fig = figures.FIGURES["samples"](ctx)
    w, h = fig.get_size_inches()
    plots.save_figure(fig, tmp_path / "s.png", dpi=80)
    with Image.open(tmp_path / "s.png") as im:
        assert im.size == (round(w * 80), round(h * 80))
    assert grid_cells(tmp_path / "s.png") == [(10, 10)]


def test_sample_draws_of_a_bernoulli_model_are_binary(trained):
    ctx, _ = trained
    fig = figures.FIGURES["sample_draws"](ctx)
    values = np.unique(np.asarray(fig.axes[0].images[0].get_array()))
    assert set(values.tolist()) <= {0.0, 1.0, plots.PAD_VALUE}


def test_manifold_latents_are_normal_quantiles_with_z1_growing_upwards():
    z = plots.manifold_latents(2, num_steps=5).reshape(5, 5, 2)
    q = norm.ppf((np.arange(5) + 0.5) / 5)
    np.testing.assert_allclose(z[2, :, 0], q, rtol=1e-5, atol=1e-6)   # columns: z0 left to right
    np.testing.assert_allclose(z[:, 2, 1], q[::-1], rtol=1e-5, atol=1e-6)  # rows: z1 top is highest
    z4 = plots.manifold_latents(4, num_steps=3, dims=(1, 3))
    assert (z4[:, [0, 2]] == 0).all() and np.allclose(sorted(set(z4[:, 3].tolist())), norm.ppf([1 / 6, .5, 5 / 6]), atol=1e-6)
    with pytest.raises(ValueError, match="latent_dim >= 2"):
        plots.manifold_latents(1)


def test_manifold_of_a_2d_latent_space_is_a_20_by_20_grid(tmp_path):
    torch.manual_seed(0)
    info = DataInfo("toy", (8, 8), 64, "binary", "none")
    model = build_model(ModelConfig(latent_dim=2, hidden=[16]), info).eval()
    z = plots.manifold_latents(2, 20)
    means = figures.decode_means(model, z)
    fig = plots.plot_manifold(means, (8, 8), 20, (0, 1), 2)
    plots.save_figure(fig, tmp_path / "m.png")
    assert grid_cells(tmp_path / "m.png") == [(20, 20)]


def test_manifold_of_4_latent_dims_spans_the_two_most_active(trained, tmp_path):
    ctx, _ = trained
    mu = torch.cat([ctx.model.posterior(ctx.splits.test).mean]).detach().numpy()
    top2 = sorted(np.argsort(-mu.var(0), kind="stable")[:2].tolist())
    fig = figures.FIGURES["manifold"](ctx)
    assert f"z{top2[0]} left to right, z{top2[1]} bottom to top" in fig.axes[0].get_title()
    plots.save_figure(fig, tmp_path / "m.png")
    assert grid_cells(tmp_path / "m.png") == [(figures.MANIFOLD_STEPS, figures.MANIFOLD_STEPS)]


def test_traversals_have_one_row_per_latent_dim_most_active_first(trained, tmp_path):
    ctx, _ = trained
    mu = ctx.model.posterior(ctx.splits.test).mean.detach().numpy()
    order = np.argsort(-mu.var(0), kind="stable").tolist()
    fig = figures.FIGURES["traversals"](ctx)
    labels = [t.get_text().split()[0] for t in fig.axes[0].get_yticklabels()]
    assert labels == [f"z{d}" for d in order]
    plots.save_figure(fig, tmp_path / "t.png")
    assert grid_cells(tmp_path / "t.png") == [(ctx.model.latent_dim, figures.TRAVERSAL_STEPS)]


def test_traversal_latents_vary_one_dimension_per_row():
    z = plots.traversal_latents(3, [2, 0], num_steps=4).reshape(2, 4, 3)
    q = norm.ppf((np.arange(4) + 0.5) / 4)
    np.testing.assert_allclose(z[0, :, 2], q, rtol=1e-5)
    np.testing.assert_allclose(z[1, :, 0], q, rtol=1e-5)
    assert (z[0, :, :2] == 0).all() and (z[1, :, 1:] == 0).all()


def test_latent_scatter_is_the_pca_of_test_posterior_means_coloured_by_label(trained, tmp_path):
    ctx, _ = trained
    fig = figures.FIGURES["latent"](ctx)
    ax = fig.axes[0]
    assert len(ax.collections) == len(set(ctx.splits.test_labels.tolist())) == 10
    mu = ctx.model.posterior(ctx.splits.test).mean.detach().double().numpy()
    centred = mu - mu.mean(0)
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    ref = centred @ vt[:2].T
    got = np.concatenate([c.get_offsets() for c in ax.collections])
    labels = ctx.splits.test_labels.numpy()
    ref = np.concatenate([ref[labels == c] for c in sorted(set(labels.tolist()))])
    for j in range(2):  # principal axes are defined up to sign
        assert np.allclose(got[:, j], ref[:, j], atol=1e-4) or np.allclose(got[:, j], -ref[:, j], atol=1e-4)
    assert ax.get_xlabel().startswith("PC1")


def test_latent_tsne_on_request_gives_finite_2d_points(trained):
    ctx, _ = trained
    points, names = plots.embed_2d(ctx.posterior_means(), "tsne", seed=0)
    assert points.shape == (len(ctx.splits.test), 2) and torch.isfinite(points).all()
    assert names == ("t-SNE 1", "t-SNE 2")
    with pytest.raises(ValueError, match="allowed: pca, tsne"):
        plots.embed_2d(ctx.posterior_means(), "umap")


def test_training_curves_use_a_log_x_axis_and_the_logged_numbers(trained, tmp_path):
    ctx, _ = trained
    fig = plots.plot_training_curves(ctx.records)
    assert [ax.get_xscale() for ax in fig.axes] == ["log", "log", "log"]
    train_line, valid_line = fig.axes[0].get_lines()
    assert list(train_line.get_xdata()) == [r["examples"] for r in ctx.records]
    assert list(train_line.get_ydata()) == [r["train/elbo"] for r in ctx.records]
    assert list(valid_line.get_ydata()) == [r["valid/elbo"] for r in ctx.records]
    assert list(fig.axes[2].get_lines()[0].get_ydata()) == [r["train/kl"] for r in ctx.records]
    plots.save_figure(fig, tmp_path / "c.png", dpi=50)
    with Image.open(tmp_path / "c.png") as im:
        assert im.size == (14 * 50, 4 * 50)


def test_curves_skip_non_finite_values():
    fig = plots.plot_training_curves([{"examples": 10, "train/elbo": -5.0, "valid/elbo": "nan"},
                                      {"examples": 20, "train/elbo": -4.0, "valid/elbo": -4.5}])
    train_line, valid_line = fig.axes[0].get_lines()
    assert list(valid_line.get_xdata()) == [20.0] and list(train_line.get_xdata()) == [10.0, 20.0]


def test_tabular_data_get_heat_maps_and_line_traversals_but_no_manifold():
    torch.manual_seed(0)
    info = DataInfo("table", (5,), 5, "real", "none")
    model = build_model(ModelConfig(latent_dim=3, hidden=[8], likelihood="bernoulli"), info).eval()
    x = torch.rand(30, 5)
    ctx = figures.FigureContext(model, Splits(x, x[:0], x[:12], None, None, torch.arange(12) % 3), info,
                                [{"examples": 10, "train/elbo": -3.0}], seed=0)
    drawn = dict(figures.draw_figures(ctx, figures.BASIC))
    assert set(drawn) == set(figures.BASIC) - {"manifold", "prior_components", "samples_per_class"}
    rec = drawn["reconstructions"]
    heat = [a for a in rec.axes if a.images and a.get_title()]
    np.testing.assert_allclose(heat[0].images[0].get_array(), x[:12].numpy())
    trav = [a for a in drawn["traversals"].axes]
    assert len(trav) == 3 and all(len(a.get_lines()) == figures.TRAVERSAL_STEPS for a in trav)
    with pytest.raises(ValueError, match="needs image data"):
        plots.plot_manifold(torch.zeros(4, 5), (5,), 2)


@pytest.mark.parametrize("name", sorted(__import__("aevb.models.likelihoods", fromlist=["LIKELIHOODS"]).LIKELIHOODS))
def test_decoded_figures_show_the_likelihood_mean(name):
    """The figures' E[x|z] is the distribution's mean (for the continuous Bernoulli not lambda)."""
    torch.manual_seed(0)
    info = DataInfo("toy", (4, 4), 16, "unit_interval" if name != "bernoulli" else "binary", "none")
    model = build_model(ModelConfig(latent_dim=2, hidden=[8], likelihood=name), info).eval()
    z = torch.randn(6, 2)
    expected = model.likelihood(z).mean
    if name == "categorical":  # E[x|z] = sum_k k softmax_k, drawn on the [0, 1] scale (levels / 255)
        probs = model.likelihood(z).base_dist.probs  # (6, 16, 256)
        expected = (probs * torch.arange(256.0)).sum(-1) / 255
    elif model.likelihood_module.wants_integer_levels:  # discretized logistic (mixture): sum_k k P(x_d = k)
        levels = torch.arange(256.0).view(256, 1, 1)
        pmf = model.likelihood(z).base_dist.log_prob(levels.expand(256, 6, 16)).exp()  # (256, 6, 16)
        assert torch.allclose(pmf.sum(0), torch.ones(6, 16), atol=1e-5)
        expected = (pmf * levels).sum(0) / 255
    assert torch.allclose(figures.decode_means(model, z), expected, atol=1e-6)
    assert math.isfinite(float(expected.detach().sum()))


@pytest.mark.parametrize("examples", [[1500, 3000], [4000, 8000, 40000, 80000], [100, 10_000, 1_000_000]])
def test_curves_x_axis_has_readable_labels_for_short_and_long_runs(examples):
    fig = plots.plot_training_curves([{"examples": n, "train/elbo": -100.0 + i} for i, n in enumerate(examples)])
    fig.canvas.draw()
    ax = fig.axes[0]
    lo, hi = ax.get_xlim()
    shown = [t for t in ax.xaxis.get_majorticklabels() + ax.xaxis.get_minorticklabels()
             if t.get_text() and lo <= t.get_position()[0] <= hi]
    assert shown, "no x tick label inside the axis"
    boxes = sorted((t.get_window_extent().x0, t.get_window_extent().x1) for t in shown)
    assert all(a1 <= b0 for (_, a1), (b0, _) in zip(boxes, boxes[1:])), "x tick labels overlap"


def test_bright_images_use_gray_so_that_1_is_white_and_cells_stay_separated(tmp_path):
    faces = torch.full((12, 6 * 5), 0.8)  # mostly bright, like Frey faces
    assert figures.choose_cmap(faces) == "gray" and figures.choose_cmap(1 - faces) == "gray_r"
    fig = plots.plot_samples(faces, (6, 5), ncols=4, cmap="gray")
    plots.save_figure(fig, tmp_path / "f.png")
    assert grid_cells(tmp_path / "f.png") == [(3, 4)]
    (mask, pixels), = grid_blocks(tmp_path / "f.png")
    assert np.allclose(pixels[~mask], 0.8 * 255, atol=1.5)  # value 0.8 drawn light, not dark


def test_colour_images_are_drawn_in_colour(tmp_path):
    x = torch.zeros(4, 3, 4, 4)
    x[:, 0] = 1.0  # pure red images
    fig = plots.plot_samples(x.reshape(4, -1), (3, 4, 4), ncols=2)
    plots.save_figure(fig, tmp_path / "c.png")
    assert grid_cells(tmp_path / "c.png") == [(2, 2)]
    (mask, pixels), = grid_blocks(tmp_path / "c.png")
    assert np.allclose(pixels[~mask], [255, 0, 0], atol=1)
