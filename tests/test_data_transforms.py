"""Preprocessing: dynamic and static binarization, uniform dequantization, integer levels."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from aevb.config import DataConfig
from aevb.data import build_datasets, prepare_batch


def draws(seed: int, x: torch.Tensor, num_epochs: int = 3) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [prepare_batch(x, "dynamic", g) for _ in range(num_epochs)]


def test_dynamic_binarization_draws_afresh_each_epoch_and_repeats_for_a_seed():
    x = torch.full((50, 784), 0.5)
    first, again, other = draws(0, x), draws(0, x), draws(1, x)
    assert not torch.equal(first[0], first[1]) and not torch.equal(first[1], first[2])
    assert all(torch.equal(a, b) for a, b in zip(first, again))
    assert not torch.equal(first[0], other[0])
    assert set(torch.unique(first[0]).tolist()) == {0.0, 1.0}


def test_dynamic_binarization_is_bernoulli_with_the_pixel_intensity():
    x = torch.tensor([0.0, 0.1, 0.5, 0.9, 1.0]).repeat(20000, 1)
    mean = prepare_batch(x, "dynamic", torch.Generator().manual_seed(0)).mean(0)
    # standard error sqrt(p(1-p)/20000) <= 0.0036: 5 sigma
    assert torch.allclose(mean, x[0], atol=0.018)
    assert mean[0] == 0 and mean[-1] == 1


def test_binarization_none_and_static_leave_batches_unchanged():
    x = torch.rand(4, 3)
    assert torch.equal(prepare_batch(x, "none"), x) and torch.equal(prepare_batch(x, "static"), x)


def test_static_binarization_is_one_seeded_draw():
    a, info = build_datasets(DataConfig(name="digits", binarize="static"), "bernoulli")
    b, _ = build_datasets(DataConfig(name="digits", binarize="static"), "bernoulli")
    c, _ = build_datasets(DataConfig(name="digits", binarize="static", split_seed=1), "bernoulli")
    gray, _ = build_datasets(DataConfig(name="digits", binarize="none"), "gaussian")
    assert info.binarization == "static" and info.support == "binary"
    assert torch.equal(a.train, b.train) and torch.equal(a.test, b.test)
    assert not torch.equal(a.train, c.train[:len(a.train)])
    assert set(torch.unique(a.train).tolist()) == {0.0, 1.0}
    assert torch.all(a.train[gray.train == 0] == 0) and torch.all(a.train[gray.train == 1] == 1)
    assert abs(float(a.train.mean() - gray.train.mean())) < 0.01  # E[Bernoulli(x)] = x


def test_uniform_dequantization_adds_noise_within_each_level(tmp_path):
    x_int = np.random.default_rng(0).integers(0, 256, (200, 10)).astype(np.uint8)
    np.save(tmp_path / "a.npy", x_int)
    cfg = DataConfig(name=str(tmp_path / "a.npy"), dequantize="uniform", valid_fraction=0, test_fraction=0)
    splits, info = build_datasets(cfg, "gaussian")
    assert info.dequantization == "uniform" and info.support == "unit_interval" and info.levels == 256
    x = splits.train.double()
    levels = torch.floor(x * 256)
    u = x * 256 - levels
    assert sorted(map(tuple, levels.long().tolist())) == sorted(map(tuple, x_int.astype(np.int64).tolist()))
    assert float(u.min()) >= 0 and float(u.max()) < 1
    assert abs(float(u.mean()) - 0.5) < 0.02  # U[0,1): mean 1/2, se 0.29/sqrt(2000)
    again, _ = build_datasets(cfg, "gaussian")
    assert torch.equal(again.train, splits.train)


def test_dequantization_is_refused_with_binarization():
    with pytest.raises(ValueError, match="dequantize = 'uniform' is for continuous likelihoods .*binarization=dynamic"):
        build_datasets(DataConfig(name="digits", dequantize="uniform"), "bernoulli")


def test_likelihoods_that_want_integer_levels_get_the_raw_integers(monkeypatch):
    from aevb.models import likelihoods

    class IntegerLikelihood(likelihoods.Likelihood):
        wants_integer_levels = True

    monkeypatch.setitem(likelihoods.LIKELIHOODS, "integer_test", IntegerLikelihood)
    splits, info = build_datasets(DataConfig(name="digits"), "integer_test")
    gray, _ = build_datasets(DataConfig(name="digits"), "gaussian")
    assert info.support == "integer" and info.levels == 17 and info.binarization == "none"
    assert torch.equal(splits.train, gray.train * 16)
    assert torch.equal(splits.train, splits.train.round()) and float(splits.train.max()) == 16
