"""Count matrices from MatrixMarket .mtx and AnnData .h5ad files; a clear error without the anndata extra."""

import builtins
import sys
import types

import numpy as np
import pytest
import scipy.io
import scipy.sparse
import torch

from aevb.cli import main
from aevb.config import DataConfig
from aevb.data import build_datasets


def sparse_counts(n=50, d=7, seed=0):
    rng = np.random.default_rng(seed)
    dense = rng.poisson(2.0, size=(n, d)) * (rng.random((n, d)) < 0.3)
    return scipy.sparse.csr_matrix(dense), dense


def all_rows(splits):
    return torch.cat([splits.train, splits.valid, splits.test])


def test_mtx_features_by_cells_is_read_transposed_as_raw_counts(tmp_path):
    matrix, dense = sparse_counts()
    path = tmp_path / "matrix.mtx"
    scipy.io.mmwrite(str(path), matrix.T.tocoo())  # 10x layout: features x cells
    cfg = DataConfig(name=str(path), transpose=True)
    splits, info = build_datasets(cfg, "zinb")
    assert info.support == "counts" and info.num_dims == 7 and sum(info.sizes.values()) == 50
    rows = all_rows(splits).numpy()  # shuffled by the split: compare the multisets of rows
    assert sorted(map(tuple, rows.tolist())) == sorted(map(tuple, dense.astype(float).tolist()))
    assert build_datasets(DataConfig(name=str(path)), "zinb")[1].num_dims == 50  # as stored: 7 examples of 50


def test_a_matrix_too_large_to_hold_dense_is_refused_with_the_size(tmp_path, monkeypatch):
    from aevb.data import count_files

    matrix, _ = sparse_counts()
    path = tmp_path / "m.mtx"
    scipy.io.mmwrite(str(path), matrix.tocoo())
    monkeypatch.setattr(count_files, "MAX_DENSE_BYTES", 1000)
    with pytest.raises(ValueError, match="50 x 7 entries take .* GiB as dense float32.*select fewer features"):
        build_datasets(DataConfig(name=str(path)), "poisson")


def test_h5ad_without_the_anndata_extra_gives_the_pip_command(tmp_path, monkeypatch, capsys):
    real_import = builtins.__import__

    def no_anndata(name, *args, **kwargs):
        if name == "anndata" or name.startswith("anndata."):
            raise ImportError("No module named 'anndata'")
        return real_import(name, *args, **kwargs)

    monkeypatch.delitem(sys.modules, "anndata", raising=False)
    monkeypatch.setattr(builtins, "__import__", no_anndata)
    (tmp_path / "cells.h5ad").write_bytes(b"")
    code = main(["train", "--data", str(tmp_path / "cells.h5ad"), "--likelihood", "zinb", "--out", str(tmp_path / "r")])
    assert code == 2
    assert "pip install 'aevb[anndata]'" in capsys.readouterr().err


def test_h5ad_x_sparse_and_obs_labels_through_anndata(tmp_path, monkeypatch):
    pandas = pytest.importorskip("pandas")
    matrix, dense = sparse_counts(n=40, d=5)
    cell_types = ["b", "a", "c", "a"] * 10
    fake = types.ModuleType("anndata")
    opened = []

    def read_h5ad(path):
        opened.append(path)
        return types.SimpleNamespace(X=matrix, obs=pandas.DataFrame({"cell_type": cell_types}))

    fake.read_h5ad = read_h5ad
    monkeypatch.setitem(sys.modules, "anndata", fake)
    path = tmp_path / "cells.h5ad"
    path.write_bytes(b"")
    cfg = DataConfig(name=str(path), label_column="cell_type", test_fraction=0, valid_fraction=0)
    splits, info = build_datasets(cfg, "nb")
    assert opened == [str(path)] and info.label_names == ["a", "b", "c"] and info.support == "counts"
    expected_labels = np.array([["a", "b", "c"].index(t) for t in cell_types])
    assert np.array_equal(np.sort(splits.train_labels.numpy()), np.sort(expected_labels))
    assert float(splits.train.sum()) == float(dense.sum()) and len(splits.train) == 40
    with pytest.raises(ValueError, match="'kind' is not a column of obs; it has cell_type"):
        build_datasets(DataConfig(name=str(path), label_column="kind"), "nb")
