"""Tables: a column named label/target/class is the label (with a notice); warnings for latent_dim >=
num_dims and for real columns on different scales under a gaussian likelihood."""

import numpy as np
import pytest
import torch
from conftest import tiny_config

from aevb.data import DataInfo
from aevb.data.advice import data_warnings
from aevb.data.tables import read_csv


def _write(path, header, rows):
    path.write_text(",".join(header) + "\n" + "\n".join(",".join(str(v) for v in r) for r in rows) + "\n")
    return path


def test_a_column_named_label_is_taken_as_the_label_with_a_notice(tmp_path, capsys):
    path = _write(tmp_path / "t.csv", ["a", "b", "Label"], [[0.5, 1.5, 0], [2.5, 3.5, 1], [4.5, 5.5, 1]])
    raw = read_csv(path)
    assert raw.x.shape == (3, 2) and raw.y.tolist() == [0, 1, 1]
    assert "column 'Label' is taken as the label" in capsys.readouterr().err
    kept = read_csv(path, "none")
    assert kept.x.shape == (3, 3) and kept.y is None


def test_two_label_like_columns_ask_which_one(tmp_path):
    path = _write(tmp_path / "t.csv", ["target", "class", "x"], [[0, 1, 0.5], [1, 0, 0.25]])
    with pytest.raises(ValueError, match="'target', 'class' all look like labels; say which"):
        read_csv(path)


def _info(num_dims, support="real", standardization=None):
    return DataInfo(name="t", shape=(num_dims,), num_dims=num_dims, support=support, binarization="none",
                    standardization=standardization)


def test_latent_dim_not_below_the_number_of_columns_is_flagged():
    x = torch.randn(50, 13)
    assert any("latent_dim = 20 is not smaller than the 13 data dimensions" in m
               for m in data_warnings(x, _info(13), "gaussian", 20))
    assert data_warnings(x, _info(13), "gaussian", 2) == []


def test_unscaled_real_columns_under_a_gaussian_suggest_standardizing():
    rng = np.random.default_rng(0)
    x = torch.from_numpy(rng.normal(size=(100, 3)) * np.array([0.1, 1.0, 1000.0]) + np.array([0, 0, 700.0]))
    warned = data_warnings(x, _info(3), "gaussian", 1)
    assert len(warned) == 1 and "--standardize true" in warned[0]
    assert data_warnings(x, _info(3, standardization={"mean": [0] * 3, "std": [1] * 3}), "gaussian", 1) == []
    assert data_warnings(x, _info(3), "bernoulli", 1) == []


def test_eight_bit_data_under_a_continuous_density_suggest_dequantization():
    info = DataInfo(name="mnist", shape=(4,), num_dims=4, support="unit_interval", binarization="none", levels=256)
    warned = data_warnings(torch.rand(10, 4), info, "gaussian", 2)
    assert len(warned) == 1 and "--dequantize uniform" in warned[0]
    info.dequantization = "uniform"
    assert data_warnings(torch.rand(10, 4), info, "gaussian", 2) == []


def test_training_on_a_wine_like_table_prints_both_warnings(tmp_path, capsys):
    from aevb.training.loop import train

    rng = np.random.default_rng(0)
    rows = np.c_[rng.normal(size=(60, 2)) * [0.05, 500.0] + [1, 1000], rng.integers(0, 3, 60)]
    path = _write(tmp_path / "wine.csv", ["acid", "proline", "class"], rows.tolist())
    cfg = tiny_config(tmp_path, data={"name": str(path)}, model={"likelihood": "gaussian", "latent_dim": 4, "hidden": [8]},
                      train={"epochs": 1})
    train(cfg)
    err = capsys.readouterr().err
    assert "column 'class' is taken as the label" in err
    assert "latent_dim = 4 is not smaller than the 2 data dimensions" in err and "--standardize true" in err
