"""Named data sets read from files: MNIST and Frey Face (real files in ../shared/data), .mat reading."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from aevb.config import DataConfig
from aevb.data import build_datasets, load_raw

MNIST_TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
MNIST_TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
FREY_PIXEL_SUM = 169968741


@pytest.fixture(scope="module")
def mnist_standard():
    from tests.conftest import SHARED_DATA

    if not (SHARED_DATA / "mnist").is_dir():
        pytest.skip("../shared/data/mnist is absent")
    return build_datasets(DataConfig(name="mnist", data_dir=str(SHARED_DATA / "mnist")), "bernoulli")


def test_mnist_loads_60000_plus_10000_with_the_published_label_counts(mnist_standard):
    splits, info = mnist_standard
    assert info.sizes == {"train": 50000, "valid": 10000, "test": 10000}
    train_labels = torch.cat([splits.train_labels, splits.valid_labels])
    assert torch.bincount(train_labels, minlength=10).tolist() == MNIST_TRAIN_COUNTS
    assert torch.bincount(splits.test_labels, minlength=10).tolist() == MNIST_TEST_COUNTS
    assert splits.train.dtype == torch.float32 and splits.train.shape == (50000, 784)
    assert info.shape == (28, 28) and info.support == "binary" and info.binarization == "dynamic"


def test_mnist_pixels_are_scaled_by_255_with_the_published_mean(mnist_standard):
    splits, _ = mnist_standard
    pixels = torch.cat([splits.train, splits.valid])
    assert pixels.min() == 0 and pixels.max() == 1
    levels = (pixels * 255).round().to(torch.int64)
    assert torch.equal(levels.float() / 255, pixels)  # exactly k / 255
    assert float(levels.double().mean() / 255) == pytest.approx(0.1306604762738429, abs=1e-12)


def test_mnist_iwae_split_keeps_the_last_400_training_images_for_validation(shared_data, mnist_standard):
    standard, _ = mnist_standard
    iwae, info = build_datasets(DataConfig(name="mnist", data_dir=str(shared_data), split="iwae"), "bernoulli")
    assert info.sizes == {"train": 59600, "valid": 400, "test": 10000}
    full_train = torch.cat([standard.train, standard.valid])
    assert torch.equal(iwae.train, full_train[:59600]) and torch.equal(iwae.valid, full_train[59600:])
    assert torch.equal(iwae.test, standard.test)


def test_mnist_rejects_an_unknown_split_protocol(shared_data):
    with pytest.raises(ValueError, match="'larochelle' is not a split of mnist; allowed: standard, iwae"):
        build_datasets(DataConfig(name="mnist", data_dir=str(shared_data), split="larochelle"))


def test_frey_face_loads_1965_faces_with_the_published_pixel_sum(shared_data):
    raw = load_raw(DataConfig(name="frey-face", data_dir=str(shared_data)))
    assert raw.x.shape == (1965, 28, 20) and raw.x.dtype == np.uint8
    assert int(raw.x.astype(np.int64).sum()) == FREY_PIXEL_SUM


def test_frey_face_can_train_on_all_1965_faces_with_empty_valid_and_test(shared_data):
    cfg = DataConfig(name="frey-face", data_dir=str(shared_data), valid_fraction=0.0, test_fraction=0.0)
    splits, info = build_datasets(cfg, "gaussian")
    assert info.sizes == {"train": 1965, "valid": 0, "test": 0}
    assert splits.valid.shape == (0, 560) and splits.test.shape == (0, 560)
    assert info.support == "unit_interval" and info.binarization == "none"
    assert int((splits.train * 255).round().to(torch.int64).sum()) == FREY_PIXEL_SUM


def test_frey_face_fractions_split_without_overlap(shared_data):
    splits, info = build_datasets(DataConfig(name="frey-face", data_dir=str(shared_data)), "gaussian")
    assert info.sizes == {"train": 1592, "valid": 177, "test": 196}  # round(196.5) = 196 (half to even), round(176.9)
    total = sum(int((splits.get(s)[0] * 255).round().to(torch.int64).sum()) for s in ("train", "valid", "test"))
    assert total == FREY_PIXEL_SUM


def test_frey_face_mat_file_matches_the_npz_layout(tmp_path):
    from scipy.io import savemat

    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(7, 28, 20), dtype=np.uint8)
    savemat(tmp_path / "frey_rawface.mat", {"ff": images.reshape(7, 560).T})  # (560, N), one face per column
    raw = load_raw(DataConfig(name="frey-face", data_dir=str(tmp_path)))
    assert np.array_equal(raw.x, images)
    splits, info = build_datasets(DataConfig(name="frey-face", data_dir=str(tmp_path), valid_fraction=0,
                                             test_fraction=0), "gaussian")
    got = sorted(map(tuple, (splits.train * 255).round().to(torch.int64).tolist()))
    assert got == sorted(map(tuple, images.reshape(7, 560).astype(np.int64).tolist()))


def test_frey_face_mat_without_ff_names_the_variables_it_has(tmp_path):
    from scipy.io import savemat

    savemat(tmp_path / "frey_rawface.mat", {"faces": np.zeros((560, 2), np.uint8)})
    with pytest.raises(KeyError, match="no variable 'ff'; the file holds faces"):
        load_raw(DataConfig(name="frey-face", data_dir=str(tmp_path)))


def test_fashion_mnist_reads_idx_files_from_data_dir(tmp_path):
    from tests.data_helpers import write_idx_set

    x_train, y_train, x_test, y_test = write_idx_set(tmp_path / "fashion-mnist", num_train=50010, num_test=3)
    splits, info = build_datasets(DataConfig(name="fashion-mnist", data_dir=str(tmp_path)), "gaussian")
    assert info.sizes == {"train": 50000, "valid": 10, "test": 3}
    assert torch.equal(splits.valid * 255, torch.as_tensor(x_train[50000:].reshape(10, 784), dtype=torch.float32))
    assert torch.equal(splits.test_labels, torch.as_tensor(y_test, dtype=torch.int64))
    assert str(tmp_path / "fashion-mnist") in info.source


def test_uncompressed_idx_files_are_read_too(tmp_path):
    from tests.data_helpers import write_idx_set

    x_train, *_ = write_idx_set(tmp_path, num_train=59601, num_test=2, gz=False)
    splits, info = build_datasets(DataConfig(name="mnist", data_dir=str(tmp_path), split="iwae"), "gaussian")
    assert info.sizes == {"train": 59600, "valid": 1, "test": 2}
    assert torch.equal(splits.valid * 255, torch.as_tensor(x_train[-1:].reshape(1, 784), dtype=torch.float32))


def test_binarized_mnist_reads_the_amat_files_without_binarizing_again(tmp_path):
    from tests.data_helpers import write_amat_set

    train, valid, test = write_amat_set(tmp_path)
    cfg = DataConfig(name="binarized-mnist", data_dir=str(tmp_path), verify=False)
    splits, info = build_datasets(cfg, "bernoulli")
    assert info.sizes == {"train": 6, "valid": 3, "test": 2}
    assert info.support == "binary" and info.binarization == "none"
    for split, a in zip(("train", "valid", "test"), (train, valid, test)):
        assert torch.equal(splits.get(split)[0], torch.as_tensor(a, dtype=torch.float32))


def test_binarized_mnist_files_that_differ_from_the_published_sha1_are_refused(tmp_path):
    from tests.data_helpers import write_amat_set

    write_amat_set(tmp_path)
    with pytest.raises(ValueError, match=r"binarized_mnist_train.amat: SHA-1 [0-9a-f]{40} does not match the "
                                         r"published cf70514ec5f481e54ad3eb0e6c03c83326ff96f8.*data.verify = false"):
        build_datasets(DataConfig(name="binarized-mnist", data_dir=str(tmp_path)), "bernoulli")


def test_binarized_mnist_reads_gzipped_amat_files_checking_the_decompressed_sha1(tmp_path):
    from tests.data_helpers import write_amat_set

    train, valid, test = write_amat_set(tmp_path, gz=True)
    splits, info = build_datasets(DataConfig(name="binarized-mnist", data_dir=str(tmp_path), verify=False), "bernoulli")
    assert info.sizes == {"train": 6, "valid": 3, "test": 2} and "SHA-1 not checked" in info.source
    for split, a in zip(("train", "valid", "test"), (train, valid, test)):
        assert torch.equal(splits.get(split)[0], torch.as_tensor(a, dtype=torch.float32))
    with pytest.raises(ValueError, match=r"binarized_mnist_train.amat.gz: SHA-1 [0-9a-f]{40} of the decompressed "
                                         r"bytes does not match the published cf70514ec5f481e54ad3eb0e6c03c83326ff96f8"):
        build_datasets(DataConfig(name="binarized-mnist", data_dir=str(tmp_path)), "bernoulli")


@pytest.mark.parametrize("text", [b"0 1 1\n1 0 0\n", b"0 1 1\r\n1 0 0\r\n", b"0  1 1\n1 0 0", b"0 1 1 \n1 0 0 \n"])
def test_amat_parsing_gives_the_same_rows_for_any_spacing(text):
    from aevb.data.readers import parse_amat

    assert parse_amat(text, "f.amat", num_dims=3).tolist() == [[0, 1, 1], [1, 0, 0]]


@pytest.mark.parametrize("text, message", [(b"0 1 2\n1 0 0\n", r"f.amat, line 1, column 3: value '2', expected 0 or 1"),
                                           (b"0 1 1\n1 0\n", r"f.amat, line 2: 2 values, expected 3"),
                                           (b"", r"f.amat: the file is empty")])
def test_bad_amat_content_names_the_line_and_column(text, message):
    from aevb.data.readers import parse_amat

    with pytest.raises(ValueError, match=message):
        parse_amat(text, "f.amat", num_dims=3)


def test_the_published_binarized_mnist_files_load_50000_10000_10000_sha1_verified(shared_data):
    """The real .amat.gz files (Larochelle & Murray) in ../shared/data/binarized_mnist; skipped when absent."""
    folder = shared_data / "binarized_mnist"
    if not folder.is_dir():
        pytest.skip(f"{folder} is absent")
    splits, info = build_datasets(DataConfig(name="binarized-mnist", data_dir=str(folder)), "bernoulli")
    assert info.sizes == {"train": 50000, "valid": 10000, "test": 10000}
    assert "SHA-1 verified" in info.source and info.binarization == "none" and info.shape == (28, 28)
    # each split is 0/1 and holds the per-split pixel sums counted with an independent text parse
    import gzip

    for split in ("train", "valid", "test"):
        x = splits.get(split)[0]
        assert set(x.unique().tolist()) == {0.0, 1.0}
        with gzip.open(folder / f"binarized_mnist_{split}.amat.gz", "rb") as f:
            text = f.read()
        assert x[0].tolist() == [int(v) for v in text[:text.index(b"\n")].split()]
        assert int(x.sum()) == text.count(b"1")


def test_named_sets_that_are_missing_say_where_they_were_looked_for(tmp_path, monkeypatch):
    monkeypatch.setenv("AEVB_CACHE", str(tmp_path / "cache"))
    with pytest.raises(FileNotFoundError, match="apt-get install dataset-fashion-mnist"):
        build_datasets(DataConfig(name="fashion-mnist", data_dir=str(tmp_path)))
    with pytest.raises(FileNotFoundError, match=f"frey_rawface.npz.*{tmp_path}"):
        build_datasets(DataConfig(name="frey-face", data_dir=str(tmp_path)))
    with pytest.raises(FileNotFoundError, match=f"mnist not found: put the four files .* in {tmp_path / 'cache'}"):
        build_datasets(DataConfig(name="mnist", data_dir=str(tmp_path)))


@pytest.mark.parametrize("name, levels, shape, num_examples", [("digits", 17, (8, 8), 1797),
                                                               ("mnist5k", 256, (28, 28), 5000)])
def test_bundled_sets_scale_by_their_maximum(name, levels, shape, num_examples):
    raw = load_raw(DataConfig(name=name))
    splits, info = build_datasets(DataConfig(name=name), "gaussian")
    assert info.levels == levels and info.shape == shape and sum(info.sizes.values()) == num_examples
    assert float(splits.train.max()) == 1.0 and float(splits.train.min()) == 0.0
    assert float(raw.x.max()) == levels - 1
