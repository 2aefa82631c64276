"""Figures for a trained model: decode what ``plots`` asks for and draw or save the PNGs.

``FIGURES`` maps a figure name (= PNG file stem) to a function ``(FigureContext) -> Figure | None``
(None when the figure does not apply, e.g. a manifold of tabular data). ``write_basic_plots`` is
what training calls at the end; ``aevb plot`` and ``aevb report`` use ``draw_figures``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from aevb.models.base import prior_quantiles
from aevb.outputs import plots

BASIC = ("reconstructions", "samples", "samples_per_class", "manifold", "prior_components", "traversals", "latent",
         "curves")
EXTRA = ("sample_draws", "latent_tsne")
NUM_RECONSTRUCTIONS = 50
NUM_SAMPLES = 100
MANIFOLD_STEPS = 20
TRAVERSAL_STEPS = 10
MAX_TRAVERSAL_DIMS = 32
MAX_SCATTER_POINTS = 2000
NUM_PRIOR_COMPONENTS = 10  # rows of the prior_components figure
SAMPLES_PER_COMPONENT = 9
SAMPLES_PER_CLASS = 10


def choose_cmap(x: torch.Tensor) -> str:
    """"gray_r" (value 1 drawn black) for mostly-empty images such as digits, "gray" for photos."""
    return "gray_r" if float(x.float().mean()) < 0.5 else "gray"


def labelled(model, labels: torch.Tensor | None):
    """The model itself, or for a conditional model the model given ``labels`` (``model.given``)."""
    if not getattr(model, "conditional", False):
        return model
    if labels is None:
        raise ValueError("this conditional model needs the data's labels for this figure")
    return model.given(labels)


def top_dim(model) -> int:
    """D_L, the size of the top stochastic layer (the prior's), which the latent figures show."""
    return getattr(model, "latent_dims", (model.latent_dim,))[-1]


@torch.no_grad()
def posterior_means(model, x: torch.Tensor, batch_size: int = 1000, labels: torch.Tensor | None = None,
                    seed: int = 0) -> torch.Tensor:
    """E_q[z_L|x] of the top layer (E_q[z|x,y] for a conditional model, given ``labels``) for (N, num_dims)
    x, batched: closed form where the family has one, else Monte Carlo (``model.posterior_moments``,
    generator seeded with ``seed``); (N, D_L) on the CPU."""
    device = next(model.parameters()).device
    g = torch.Generator(device=device).manual_seed(seed)
    out = [labelled(model, None if labels is None else labels[i:i + batch_size])
           .posterior_moments(x[i:i + batch_size].to(device), generator=g)[-1][0].cpu()
           for i in range(0, len(x), batch_size)]
    return torch.cat(out) if out else torch.zeros(0, top_dim(model))


@torch.no_grad()
def to_display(model, x: torch.Tensor) -> torch.Tensor:
    """Values on the [0, 1] scale figures draw: integer levels 0..L-1 (categorical) are divided by L-1."""
    levels = getattr(model.likelihood_module, "num_levels", None)
    if getattr(model.likelihood_module, "wants_integer_levels", False) and levels:
        return x / (levels - 1)
    return x


def decode_means(model, z: torch.Tensor) -> torch.Tensor | None:
    """E[x|z] below a top-layer z (the likelihood's mean, e.g. the continuous Bernoulli's mean, not
    lambda; ``model.decode_mean``) on the CPU, on the [0, 1] display scale (``to_display``); None
    when the model has no closed-form conditional means to decode through."""
    device = next(model.parameters()).device
    means = model.decode_mean(z.to(device))
    return None if means is None else to_display(model, means.cpu())


@dataclass
class FigureContext:
    """What the figure functions need: a model in eval mode, its data and metrics records."""

    model: Any
    splits: Any
    info: Any
    records: list = field(default_factory=list)
    seed: int = 0
    skipped: dict = field(default_factory=dict)  # figure name -> one-line reason it was not drawn
    _mu: torch.Tensor | None = None

    @property
    def cmap(self) -> str:
        return choose_cmap(self.splits.train)

    def eval_split(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The test split (or train, when there is no test split) and its labels."""
        return (self.splits.test, self.splits.test_labels) if len(self.splits.test) else \
            (self.splits.train, self.splits.train_labels)

    def posterior_means(self) -> torch.Tensor:
        if self._mu is None:
            x, y = self.eval_split()
            self._mu = posterior_means(self.model, x, labels=y, seed=self.seed)
        return self._mu

    def generator(self) -> torch.Generator:
        return torch.Generator(device=next(self.model.parameters()).device).manual_seed(self.seed)


def _reconstructions(ctx: FigureContext):
    x, y = ctx.eval_split()
    x = x[:NUM_RECONSTRUCTIONS]
    device = next(ctx.model.parameters()).device
    x_rec = labelled(ctx.model, None if y is None else y[:NUM_RECONSTRUCTIONS]).reconstruct(x.to(device)).cpu()
    return plots.plot_reconstructions(to_display(ctx.model, x), to_display(ctx.model, x_rec), ctx.info.shape,
                                      cmap=ctx.cmap, feature_names=getattr(ctx.info, "feature_names", None))


def _samples(ctx: FigureContext):
    x = ctx.model.sample(NUM_SAMPLES, generator=ctx.generator()).cpu()
    return plots.plot_samples(to_display(ctx.model, x), ctx.info.shape, cmap=ctx.cmap,
                              feature_names=getattr(ctx.info, "feature_names", None))


def _sample_draws(ctx: FigureContext):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(ctx.seed)  # x ~ p(x|z) draws from the global generator
        x = ctx.model.sample(NUM_SAMPLES, generator=ctx.generator(), mean=False).cpu()
    return plots.plot_samples(to_display(ctx.model, x), ctx.info.shape, title="samples: x ~ p(x|z), z ~ p(z)", cmap=ctx.cmap)


def most_active(ctx: FigureContext) -> tuple[list[int], torch.Tensor]:
    """Latent dimensions ordered by activity (variance of test posterior means), and the activities."""
    activity = plots.latent_activity(ctx.posterior_means())
    return torch.argsort(activity, descending=True, stable=True).tolist(), activity


def conditional_skip(ctx: FigureContext, name: str) -> bool:
    """Record why a figure of z alone is not drawn for a conditional model (its decoder needs y)."""
    if getattr(ctx.model, "conditional", False):
        ctx.skipped[name] = "the model is conditional: p(x|z,y) needs a label (see samples_per_class.png)"
        return True
    return False


@torch.no_grad()
def _samples_per_class(ctx: FigureContext):
    """Conditional models: one row per class y, E[x|z,y] for z ~ p(z|y)."""
    if not getattr(ctx.model, "conditional", False):
        return None
    c = ctx.model.num_classes
    labels = torch.arange(c).repeat_interleave(SAMPLES_PER_CLASS)  # row y: SAMPLES_PER_CLASS draws of class y
    x = to_display(ctx.model, ctx.model.sample(len(labels), generator=ctx.generator(), labels=labels).cpu())
    names = getattr(ctx.info, "label_names", None) or list(range(c))
    return plots.plot_samples(x, ctx.info.shape, ncols=SAMPLES_PER_CLASS, cmap=ctx.cmap,
                              title=f"samples per class, one row per label ({names[0]} at the top): E[x|z,y], z ~ p(z|y)")


def quantile_grid(ctx: FigureContext, name: str, num_steps: int):
    """(quantiles (num_steps, D), centre (D,)) of the prior p(z_L) at ``grid_probabilities`` and at 1/2,
    or None, recording in ``ctx.skipped`` why ``name`` cannot be drawn (no inverse CDF)."""
    with torch.no_grad():
        p_z = ctx.model.prior()
        q = prior_quantiles(p_z, plots.grid_probabilities(num_steps))
        centre = prior_quantiles(p_z, torch.tensor([0.5], dtype=torch.float64))
    if q is None or centre is None:
        hint = " (see prior_components.png instead)" if getattr(ctx.model.prior_module, "learned", False) else ""
        ctx.skipped[name] = f"the prior {type(p_z).__name__} has no inverse CDF to lay the grid through{hint}"
        return None
    return q.cpu(), centre[0].cpu()


def _decoded(ctx: FigureContext, name: str, z: torch.Tensor):
    means = decode_means(ctx.model, z)
    if means is None:
        ctx.skipped[name] = "a prior layer p(z_l|z_l+1) has no closed-form mean to decode through"
    return means


def _manifold(ctx: FigureContext):
    d = top_dim(ctx.model)
    if d < 2 or not plots.is_image(ctx.info.shape) or conditional_skip(ctx, "manifold"):
        return None
    grid = quantile_grid(ctx, "manifold", MANIFOLD_STEPS)
    if grid is None:
        return None
    a, b = (0, 1) if d == 2 else sorted(most_active(ctx)[0][:2])
    dims = (a, b)
    means = _decoded(ctx, "manifold", plots.manifold_latents(d, MANIFOLD_STEPS, dims, *grid))
    if means is None:
        return None
    return plots.plot_manifold(means, ctx.info.shape, MANIFOLD_STEPS, dims, d, cmap=ctx.cmap)


@torch.no_grad()
def _prior_components(ctx: FigureContext):
    """Rows = the heaviest mixture components of a learned prior; first column the component
    itself (the VampPrior's pseudo-input u_k, or E[x|z = mu_k]), then E[x|z] for z drawn from it."""
    from aevb.models.mixtures import DiagonalGaussianMixture, sample_components

    if getattr(ctx.model, "conditional", False):
        return None
    p_z = ctx.model.prior()
    if not isinstance(p_z, DiagonalGaussianMixture):
        return None
    idx, z = sample_components(p_z, NUM_PRIOR_COMPONENTS, SAMPLES_PER_COMPONENT, ctx.generator())  # (C, S, D)
    pseudo_inputs = getattr(ctx.model.prior_module, "pseudo_inputs", None)
    if pseudo_inputs is not None:
        first = to_display(ctx.model, pseudo_inputs[idx].cpu()).clamp(0, 1)[:, None]
        title = "VampPrior: pseudo-input u_k, then E[x|z], z ~ q(z|u_k)"
    else:
        centres = decode_means(ctx.model, p_z.loc[idx])
        if centres is None:
            return None
        first = centres[:, None]
        probs = p_z.mixture_distribution.probs
        title = (f"mixture prior, heaviest components first (weights {float(probs[idx[0]]):.3f} .. "
                 f"{float(probs[idx[-1]]):.3f}):\nE[x|z=mu_k], then E[x|z], z ~ N(mu_k, diag s_k^2)")
    drawn = decode_means(ctx.model, z)
    if drawn is None:
        return None
    rows = torch.cat([first, drawn], 1)  # (C, 1 + S, num_dims)
    return plots.plot_samples(rows.reshape(-1, rows.shape[-1]), ctx.info.shape, ncols=rows.shape[1], title=title,
                              cmap=ctx.cmap)


def _traversals(ctx: FigureContext):
    if conditional_skip(ctx, "traversals"):
        return None
    grid = quantile_grid(ctx, "traversals", TRAVERSAL_STEPS)
    if grid is None:
        return None
    order, activity = most_active(ctx)
    order = order[:MAX_TRAVERSAL_DIMS]
    means = _decoded(ctx, "traversals", plots.traversal_latents(top_dim(ctx.model), order, TRAVERSAL_STEPS, *grid))
    if means is None:
        return None
    return plots.plot_traversals(means, ctx.info.shape, order, activity, TRAVERSAL_STEPS, cmap=ctx.cmap)


def _scatter(ctx: FigureContext, method: str):
    mu = ctx.posterior_means()
    labels = ctx.eval_split()[1]
    if len(mu) > MAX_SCATTER_POINTS:
        keep = torch.randperm(len(mu), generator=torch.Generator().manual_seed(ctx.seed))[:MAX_SCATTER_POINTS]
        mu, labels = mu[keep], None if labels is None else labels[keep]
    points, names = plots.embed_2d(mu, method, ctx.seed)
    how = "" if mu.shape[1] <= 2 else f" ({'PCA' if method == 'pca' else 't-SNE'} of {mu.shape[1]} dims)"
    return plots.plot_latent_scatter(points, labels, names, title=f"posterior means E_q[z|x], {len(mu)} examples{how}",
                                     label_names=getattr(ctx.info, "label_names", None))


def _curves(ctx: FigureContext):
    return plots.plot_training_curves(ctx.records) if ctx.records else None


FIGURES = {
    "reconstructions": _reconstructions,
    "samples": _samples,
    "sample_draws": _sample_draws,
    "samples_per_class": _samples_per_class,
    "manifold": _manifold,
    "prior_components": _prior_components,
    "traversals": _traversals,
    "latent": lambda ctx: _scatter(ctx, "pca"),
    "latent_tsne": lambda ctx: _scatter(ctx, "tsne"),
    "curves": _curves,
}


def draw_figures(ctx: FigureContext, names=BASIC):
    """Yield (name, Figure) for each applicable figure in ``names``; the caller saves and closes."""
    unknown = [n for n in names if n not in FIGURES]
    if unknown:
        raise ValueError(f"unknown figure(s) {', '.join(unknown)}; allowed: {', '.join(FIGURES)}")
    ctx.model.eval()
    for name in names:
        fig = FIGURES[name](ctx)
        if fig is not None:
            yield name, fig


def write_plots(ctx: FigureContext, out_dir: Path, names=BASIC, dpi: int = 100) -> list[Path]:
    """Save each applicable figure as ``out_dir/<name>.png``; returns the paths written."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name, fig in draw_figures(ctx, names):
        plots.save_figure(fig, out_dir / f"{name}.png", dpi=dpi)
        written.append(out_dir / f"{name}.png")
    return written


def write_basic_plots(model, splits, info, run_dir: Path, seed: int) -> list[Path]:
    """The BASIC figures as PNGs in run_dir/plots (curves from run_dir/metrics.jsonl)."""
    from aevb.training.metrics import read_metrics

    ctx = FigureContext(model, splits, info, read_metrics(Path(run_dir) / "metrics.jsonl"), seed)
    return write_plots(ctx, Path(run_dir) / "plots", BASIC)


def load_context(run_dir: str, which: str = "last", seed: int = 0):
    """Model, data and metrics of a run directory as a ``FigureContext``."""
    from aevb.data import build_datasets
    from aevb.training.checkpoint import load_run
    from aevb.training.metrics import read_metrics

    cfg, model, info = load_run(run_dir, which=which)
    splits, _ = build_datasets(cfg.data, cfg.model.likelihood)
    return FigureContext(model, splits, info, read_metrics(Path(run_dir) / "metrics.jsonl"), seed)
