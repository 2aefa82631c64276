"""Named data sets read from files: MNIST, Fashion-MNIST, Frey Face, binarized MNIST.

Each loader takes the ``DataConfig`` and returns a ``RawDataset`` with the set's fixed splits
(MNIST's protocols) or none (Frey Face: split by fractions). See docs/data.md.
"""

from __future__ import annotations

import hashlib

import numpy as np

from aevb.data.bundled import RawDataset
from aevb.data.locate import cache_dir, describe_search, find_files
from aevb.data.readers import parse_amat, read_array, read_bytes, read_idx, read_mat
from aevb.data.user import FASHION_LABELS

IDX_NAMES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
MNIST_FILES = tuple(n + ".gz" for n in IDX_NAMES)
FASHION_SYSTEM_DIR = "/usr/share/datasets/fashion-mnist"

# split protocol -> (number of training images used for training, description)
MNIST_SPLITS = {
    "standard": (50000, "fixed: train[:50000] / valid train[50000:] (10,000) / test t10k (10,000)"),
    "iwae": (59600, "fixed (IWAE): train[:59600] / valid train[59600:] (400) / test t10k (10,000)"),
}

# Larochelle & Murray (2011) binarized MNIST, SHA-1 of each .amat as published (of the decompressed
# bytes when the file is gzipped: the .amat.gz files decompress to the published .amat byte for byte).
AMAT_SHA1 = {
    "train": "cf70514ec5f481e54ad3eb0e6c03c83326ff96f8",
    "valid": "13418487742e6ea6d48db7b5187353a20b1b1f8c",
    "test": "ca70bd7775e182596dec148d4dc1bc6bd6c4c5f4",
}


def split_protocol(data_cfg, allowed: dict, default: str) -> str:
    """The named split protocol asked for, checked against those the set has."""
    split = getattr(data_cfg, "split", "") or default
    if split not in allowed:
        raise ValueError(f"data.split = {split!r} is not a split of {data_cfg.name}; allowed: {', '.join(allowed)}")
    return split


def read_idx_set(folder, names: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(train images, train labels, test images, test labels) from four IDX files, counts checked."""
    x_train, y_train, x_test, y_test = (read_idx(folder / n, nd) for n, nd in zip(names, (3, 1, 3, 1)))
    for images, labels, i in ((x_train, y_train, 0), (x_test, y_test, 2)):
        if len(images) != len(labels):
            raise ValueError(f"{folder / names[i]} holds {len(images)} images but {folder / names[i + 1]} "
                             f"holds {len(labels)} labels; they must match one to one")
    if x_train.shape[1:] != x_test.shape[1:]:
        raise ValueError(f"{folder}: train images are {x_train.shape[1:]} but test images are {x_test.shape[1:]}")
    return x_train, y_train, x_test, y_test


def idx_raw(data_cfg, folder, names, source: str) -> RawDataset:
    """MNIST-format data split by the ``standard`` or ``iwae`` protocol."""
    split = split_protocol(data_cfg, MNIST_SPLITS, "standard")
    x_train, y_train, x_test, y_test = read_idx_set(folder, names)
    n_train, desc = MNIST_SPLITS[split]
    if len(x_train) <= n_train:
        raise ValueError(f"{folder}: {len(x_train)} training images, the {split} split needs more than {n_train}")
    return RawDataset(x_train[:n_train], y_train[:n_train].astype(np.int64), tuple(x_train.shape[1:]), 255.0, 256,
                      fixed_splits={"valid": (x_train[n_train:], y_train[n_train:].astype(np.int64)),
                                    "test": (x_test, y_test.astype(np.int64))},
                      source=f"{source} in {folder}", split_desc=f"{split}: {desc}")


def find_idx(sub: str, data_cfg, system: tuple[str, ...] = ()):
    """(folder, names) of the four IDX files, gzipped or not, or None."""
    return find_files(sub, [MNIST_FILES, IDX_NAMES], data_cfg.data_dir, system)


def by_hand_message(sub: str, data_cfg, system: tuple[str, ...] = ()) -> str:
    return (f"put the four files {', '.join(MNIST_FILES)} in {cache_dir() / sub} (or any folder given with "
            f"--data-dir / data.data_dir, or $AEVB_DATA_DIR/{sub}); searched: {describe_search(sub, data_cfg.data_dir, system)}")


def load_mnist(data_cfg) -> RawDataset:
    """MNIST (LeCun et al.): 60,000 + 10,000 28x28 digits, 0..255; downloaded into the cache if absent."""
    found = find_idx("mnist", data_cfg)
    if found is None and not data_cfg.data_dir:
        from aevb.data.download import download_mnist

        download_mnist()
        found = find_idx("mnist", data_cfg)
    if found is None:
        raise FileNotFoundError(f"mnist not found: {by_hand_message('mnist', data_cfg)}")
    return idx_raw(data_cfg, found[0], found[1], "MNIST IDX files")


def load_fashion_mnist(data_cfg) -> RawDataset:
    """Fashion-MNIST (Xiao et al. 2017): same format as MNIST; Debian's dataset-fashion-mnist is found."""
    system = (FASHION_SYSTEM_DIR,)
    found = find_idx("fashion-mnist", data_cfg, system)
    if found is None:
        raise FileNotFoundError("fashion-mnist not found: `apt-get install dataset-fashion-mnist` (installs "
                                f"{FASHION_SYSTEM_DIR}) or " + by_hand_message("fashion-mnist", data_cfg, system))
    raw = idx_raw(data_cfg, found[0], found[1], "Fashion-MNIST IDX files")
    raw.label_names = list(FASHION_LABELS)
    return raw


def load_frey_face(data_cfg) -> RawDataset:
    """Frey Face: 1,965 grayscale faces of 28 rows x 20 columns, 0..255, no official split.

    Read from ``frey_rawface.npz`` (key ``images``, (1965, 28, 20)) or ``frey_rawface.mat``
    (variable ``ff``, (560, 1965) with one image per column, row-major 28x20 pixels).
    """
    found = find_files("frey_face", [("frey_rawface.npz",), ("frey_rawface.mat",)], data_cfg.data_dir)
    if found is None:
        raise FileNotFoundError("frey-face not found: put frey_rawface.npz (key images) or frey_rawface.mat "
                                f"(variable ff) in one of: {describe_search('frey_face', data_cfg.data_dir)}")
    path = found[0] / found[1][0]
    if path.suffix == ".mat":
        ff = read_mat(path, "ff")
        if ff.shape[0] != 560:
            raise ValueError(f"{path}: variable ff has shape {ff.shape}, expected (560, N) with one 28x20 face per column")
        x = ff.T.reshape(-1, 28, 20)
    else:
        x = read_array(path, "images")
        if x.shape[1:] != (28, 20):
            raise ValueError(f"{path}: images have shape {x.shape}, expected (N, 28, 20)")
    split_protocol(data_cfg, {"random": None}, "random")
    return RawDataset(np.ascontiguousarray(x), None, (28, 20), 255.0, 256, source=f"Frey Face {path}")


AMAT_NAMES = tuple(f"binarized_mnist_{s}.amat" for s in ("train", "valid", "test"))
AMAT_GZ_NAMES = tuple(n + ".gz" for n in AMAT_NAMES)


def check_sha1(data: bytes, path, split: str) -> None:
    """Compare a binarized-MNIST file's (decompressed) bytes with the published SHA-1; raise naming both on mismatch."""
    digest = hashlib.sha1(data).hexdigest()
    if digest != AMAT_SHA1[split]:
        what = " of the decompressed bytes" if str(path).endswith(".gz") else ""
        raise ValueError(f"{path}: SHA-1 {digest}{what} does not match the published {AMAT_SHA1[split]} "
                         f"of Larochelle & Murray's binarized MNIST {split} file; the file is not that data set "
                         "(set data.verify = false to use it anyway)")


def load_binarized_mnist(data_cfg) -> RawDataset:
    """Larochelle & Murray's statically binarized MNIST: .amat text files (or the same gzipped,
    ``.amat.gz``) of 50,000 / 10,000 / 10,000 images; each file's SHA-1 is checked unless
    ``data.verify = false`` (of the decompressed bytes for ``.amat.gz``)."""
    found = find_files("binarized-mnist", [AMAT_NAMES, AMAT_GZ_NAMES], data_cfg.data_dir)
    if found is None:
        raise FileNotFoundError(f"binarized-mnist not found: put {', '.join(AMAT_NAMES)} (or the same gzipped, "
                                f".amat.gz) in one of: {describe_search('binarized-mnist', data_cfg.data_dir)}")
    split_protocol(data_cfg, {"standard": None}, "standard")
    folder, names = found
    verified = getattr(data_cfg, "verify", True)
    arrays = {}
    for split, name in zip(("train", "valid", "test"), names):
        data = read_bytes(folder / name)
        if verified:
            check_sha1(data, folder / name, split)
        arrays[split] = parse_amat(data, folder / name)
        del data
    checked = "SHA-1 verified" if verified else "SHA-1 not checked (data.verify = false)"
    return RawDataset(arrays["train"], None, (28, 28), 1.0, 2,
                      fixed_splits={"valid": (arrays["valid"], None), "test": (arrays["test"], None)},
                      source=f"binarized MNIST {', '.join(names)} in {folder}, {checked}", binary=True,
                      split_desc="standard: fixed .amat files train / valid / test")
