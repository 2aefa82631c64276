"""Count matrices: MatrixMarket ``.mtx`` (scipy) and AnnData ``.h5ad`` (the optional ``anndata`` extra).

Both are usually sparse (most counts are 0). aevb's training loop keeps the data set in memory as
one dense float32 tensor, so the matrix is made dense here, once, after checking that it fits:
``MAX_DENSE_BYTES`` (8 GiB) at 4 bytes per entry; above that the error says to select features
(e.g. highly variable genes) first. Rows are examples: a 10x Genomics ``matrix.mtx`` is features x
cells, so it needs ``data.transpose = true``. For ``.h5ad`` the matrix is ``X`` (cells x genes)
and ``data.label_column`` may name a column of ``obs`` (cell types) to use as labels.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from aevb.data.bundled import RawDataset
from aevb.data.user import infer_range

MAX_DENSE_BYTES = 8 << 30


class MissingExtraError(RuntimeError):
    """An optional dependency is not installed; the message gives the pip command."""


def to_dense(matrix, path: Path) -> np.ndarray:
    """A scipy sparse matrix or array -> dense float32 (N, D), refused above ``MAX_DENSE_BYTES``."""
    n, d = matrix.shape
    need = n * d * 4
    if need > MAX_DENSE_BYTES:
        raise ValueError(f"{path}: {n} x {d} entries take {need / 2**30:.1f} GiB as dense float32 (aevb keeps the "
                         f"training data dense in memory; the limit is {MAX_DENSE_BYTES / 2**30:.0f} GiB); select "
                         "fewer features first (e.g. highly variable genes) or fewer examples")
    dense = matrix.toarray() if hasattr(matrix, "toarray") else np.asarray(matrix)
    return np.asarray(dense, dtype=np.float32)


def read_mtx(path: Path, transpose: bool = False) -> RawDataset:
    """A MatrixMarket file (``scipy.io.mmread``), rows = examples (``transpose`` for features x examples)."""
    from scipy.io import mmread

    try:
        matrix = mmread(str(path))
    except (ValueError, OSError, IndexError) as e:
        raise ValueError(f"{path}: cannot read as a MatrixMarket file ({e})") from None
    if transpose:
        matrix = matrix.T
    x = to_dense(matrix, path)
    return RawDataset(x, None, (x.shape[1],), source=f"MatrixMarket file {path}" + (" (transposed)" if transpose else ""),
                      **infer_range(x))


def import_anndata():
    """The ``anndata`` module, or a ``MissingExtraError`` saying how to install it."""
    try:
        import anndata
    except ImportError:
        raise MissingExtraError(".h5ad files are read with the anndata package, which is not installed: "
                                "pip install 'aevb[anndata]' (or pip install anndata)") from None
    return anndata


def read_h5ad(path: Path, label_column: str = "") -> RawDataset:
    """``X`` of an AnnData file (cells x genes, sparse or dense) and optional labels from ``obs[label_column]``."""
    anndata = import_anndata()
    try:
        adata = anndata.read_h5ad(str(path))
    except (OSError, ValueError, KeyError) as e:
        raise ValueError(f"{path}: cannot read as an AnnData .h5ad file ({e})") from None
    if adata.X is None:
        raise ValueError(f"{path}: the AnnData object has no X matrix")
    x = to_dense(adata.X, path)
    y, names = None, None
    if label_column:
        obs = adata.obs
        if label_column not in obs.columns:
            raise ValueError(f"{path}: data.label_column = {label_column!r} is not a column of obs; it has "
                             f"{', '.join(map(str, obs.columns)) or 'no columns'}")
        values = [str(v) for v in obs[label_column]]
        names = sorted(set(values))
        y = np.array([names.index(v) for v in values], np.int64)
    return RawDataset(x, y, (x.shape[1],), source=f"AnnData file {path}", label_names=names, **infer_range(x))
