"""Every shipped preset and every configs/*.toml loads, validates and trains on tiny data.

Presets whose data (mnist, frey-face) are too big for a unit test keep their model, objective and
optimizer settings and run on scikit-learn's 8x8 digits instead.
"""

from pathlib import Path

import pytest
import torch
from torch import nn

from aevb.config import RunConfig, list_presets, read_config_file, read_preset, update, validate
from aevb.data import DATASETS, build_datasets
from aevb.inference.objectives import OBJECTIVES
from aevb.models.likelihoods import LIKELIHOODS
from aevb.models.vae import build_model
from aevb.training.loop import train
from aevb.training.optim import build_optimizer

REPO = Path(__file__).resolve().parents[1]
EXAMPLE_CONFIGS = sorted((REPO / "configs").glob("*.toml"))


def load(source) -> RunConfig:
    cfg = RunConfig()
    if isinstance(source, Path):
        return update(cfg, read_config_file(source), source=str(source))
    return update(cfg, read_preset(source), source=f"preset {source}")


def on_digits(cfg: RunConfig) -> RunConfig:
    """The same model/objective/optimizer on the bundled 8x8 digits."""
    needs_binary = cfg.model.likelihood == "bernoulli"
    update(cfg, {"data": {"name": "digits", "split": "", "binarize": "auto" if needs_binary else "none"}})
    return cfg


def loadable(source) -> RunConfig:
    cfg = load(source)
    if cfg.model.likelihood not in LIKELIHOODS:
        pytest.skip(f"likelihood {cfg.model.likelihood!r} is not registered yet (issue 3)")
    return validate(cfg)


def linear_sizes(module: nn.Module) -> list[tuple[int, int]]:
    return [(m.in_features, m.out_features) for m in module.modules() if isinstance(m, nn.Linear)]


SOURCES = list_presets() + EXAMPLE_CONFIGS


def test_the_issue_presets_are_shipped():
    assert {"aevb-mnist", "aevb-frey", "iwae-mnist", "default", "quick"} <= set(list_presets())
    assert EXAMPLE_CONFIGS, "configs/ has no example"


@pytest.mark.parametrize("source", SOURCES, ids=lambda s: s.name if isinstance(s, Path) else s)
def test_one_optimizer_step_with_the_configured_model_objective_and_optimizer(source):
    cfg = on_digits(loadable(source))
    torch.manual_seed(0)
    splits, info = build_datasets(cfg.data, cfg.model.likelihood)
    model = build_model(cfg.model, info, train_mean=splits.train.mean(0))
    optimizer = build_optimizer(model.parameters(), cfg.train, torch.device("cpu"))
    assert type(optimizer).__name__.lower() == cfg.train.optimizer
    assert optimizer.param_groups[0]["lr"] == cfg.train.lr
    if cfg.train.optimizer == "adam":
        assert optimizer.param_groups[0]["eps"] == cfg.train.adam_eps
    # encoder: D -> hidden... -> 2 * latent_dim (mean and log-variance)
    sizes = [info.num_dims, *cfg.model.hidden, 2 * cfg.model.latent_dim]
    assert linear_sizes(model.encoder) == list(zip(sizes[:-1], sizes[1:]))

    x = splits.train[:cfg.train.batch_size]
    if info.binarization == "dynamic":
        x = torch.bernoulli(x)
    o = cfg.objective
    before = [p.detach().clone() for p in model.parameters()]
    bound = OBJECTIVES[o.name](model, x, num_samples=o.num_samples, kl=o.kl, beta=o.beta).value
    assert bound.shape == (len(x),) and torch.isfinite(bound).all()
    (-bound.mean()).backward()
    optimizer.step()
    changed = [not torch.equal(a, p) for a, p in zip(before, model.parameters())]
    assert all(changed)


@pytest.mark.parametrize("source", SOURCES, ids=lambda s: s.name if isinstance(s, Path) else s)
def test_train_runs_one_epoch_with_the_preset(source, tmp_path):
    cfg = on_digits(loadable(source))
    update(cfg, {"train": {"epochs": 1, "quiet": True, "batch_size": max(cfg.train.batch_size, 50)},
                 "eval": {"k": 10}})
    cfg.out = str(tmp_path / "run")
    run_dir = train(cfg)
    saved = RunConfig.load(run_dir / "config.json")
    assert saved.model == cfg.model and saved.objective == cfg.objective
    assert saved.train.optimizer == cfg.train.optimizer and saved.train.lr == cfg.train.lr


def test_default_preset_is_exactly_the_built_in_defaults():
    assert load("default") == RunConfig()


def test_paper_presets_carry_the_papers_settings():
    mnist = load("aevb-mnist")
    assert (mnist.model.hidden, mnist.model.activation, mnist.model.likelihood) == ([500], "tanh", "bernoulli")
    assert (mnist.train.optimizer, mnist.train.lr, mnist.train.batch_size) == ("adagrad", 0.01, 100)
    assert mnist.objective.num_samples == 1 and mnist.train.weight_decay == 1.0  # N(0, I), spread over N by the trainer
    frey = load("aevb-frey")
    assert (frey.model.hidden, frey.model.likelihood, frey.model.sigma) == ([200], "gaussian", "predicted")
    assert (frey.data.name, frey.data.binarize) == ("frey-face", "none")
    iw = load("iwae-mnist")
    assert (iw.model.hidden, iw.model.latent_dim, iw.model.activation) == ([200, 200], 50, "tanh")
    assert (iw.objective.name, iw.objective.num_samples) == ("iwae", 50)
    assert (iw.train.optimizer, iw.train.adam_eps, iw.train.batch_size, iw.train.schedule) == ("adam", 1e-4, 20, "iwae")
    assert iw.train.epochs == sum(3 ** i for i in range(8))  # the IWAE schedule's 3,280 passes
    assert (iw.data.name, iw.data.split) == ("mnist", "iwae")


@pytest.mark.parametrize("name", list_presets())
def test_preset_data_sets_are_registered(name):
    data = load(name).data.name
    if data not in DATASETS:
        pytest.skip(f"data set {data!r} is not registered yet (issue 4)")
    assert callable(DATASETS[data].load)
