"""Every bad input gives an error that names the file, the position and what was expected."""

from __future__ import annotations

import gzip

import numpy as np
import pytest

from aevb.config import DataConfig
from aevb.data import build_datasets, load_raw
from aevb.data.readers import read_idx
from tests.data_helpers import idx_bytes, write_idx_set


def user(path, **kw):
    return DataConfig(name=str(path), **kw)


def test_a_path_that_does_not_exist_names_it_and_the_named_sets(tmp_path):
    with pytest.raises(ValueError, match=r"unknown data set '.*nothere.npy': not a named data set \(.*mnist.*\) and no such file"):
        build_datasets(user(tmp_path / "nothere.npy"))


def test_a_missing_idx_file_is_named(tmp_path):
    write_idx_set(tmp_path)
    (tmp_path / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(FileNotFoundError, match=f"mnist not found: put the four files .*searched: {tmp_path}"):
        build_datasets(DataConfig(name="mnist", data_dir=str(tmp_path)))


def test_wrong_idx_magic_number(tmp_path):
    (tmp_path / "x.idx").write_bytes(b"\x1f\x00\x08\x03" + bytes(16))
    with pytest.raises(ValueError, match=r"x.idx: not an IDX file: magic number is 1f000803, expected 0000TTNN"):
        read_idx(tmp_path / "x.idx")


def test_wrong_idx_number_of_dimensions(tmp_path):
    (tmp_path / "x.idx").write_bytes(idx_bytes(np.zeros((4, 28), np.uint8)))
    with pytest.raises(ValueError, match=r"x.idx: IDX header says 2 dimensions, expected 3"):
        read_idx(tmp_path / "x.idx", expected_ndim=3)


def test_idx_data_shorter_than_the_header_says(tmp_path):
    (tmp_path / "x.idx").write_bytes(idx_bytes(np.zeros((4, 28, 28), np.uint8))[:-10])
    with pytest.raises(ValueError, match=r"x.idx: IDX header says shape \(4, 28, 28\) \(3136 data bytes\) but the file holds 3126"):
        read_idx(tmp_path / "x.idx")


def test_truncated_gzip(tmp_path):
    data = gzip.compress(idx_bytes(np.arange(3000, dtype=np.uint8).reshape(3, 1000)))
    (tmp_path / "x.gz").write_bytes(data[: len(data) // 2])
    with pytest.raises(OSError, match=r"x.gz: truncated gzip file .*download it again"):
        read_idx(tmp_path / "x.gz")


def test_corrupt_gzip(tmp_path):
    data = bytearray(gzip.compress(idx_bytes(np.arange(3000, dtype=np.uint8).reshape(3, 1000))))
    data[20:40] = bytes(20)
    (tmp_path / "x.gz").write_bytes(bytes(data))
    with pytest.raises(OSError, match=r"x.gz: corrupt gzip file"):
        read_idx(tmp_path / "x.gz")


def test_idx_label_count_must_match_image_count(tmp_path):
    write_idx_set(tmp_path, num_train=12)
    (tmp_path / "train-labels-idx1-ubyte.gz").write_bytes(gzip.compress(idx_bytes(np.zeros(11, np.uint8))))
    with pytest.raises(ValueError, match=r"train-images-idx3-ubyte.gz holds 12 images but .*train-labels-idx1-ubyte.gz holds 11 labels"):
        build_datasets(DataConfig(name="mnist", data_dir=str(tmp_path)))


def test_ragged_csv_row(tmp_path):
    (tmp_path / "t.csv").write_text("a,b,c\n1,2,3\n4,5\n")
    with pytest.raises(ValueError, match=r"t.csv, line 3: 2 fields, expected 3 \(as in the header\)"):
        load_raw(user(tmp_path / "t.csv"))


def test_non_numeric_csv_field(tmp_path):
    (tmp_path / "t.csv").write_text("a,b,c\n1,2,3\n4,five,6\n")
    with pytest.raises(ValueError, match=r"t.csv, line 3, column 2 \('b'\): 'five' is not a number; expected a finite number"):
        load_raw(user(tmp_path / "t.csv"))


def test_nan_in_csv(tmp_path):
    (tmp_path / "t.csv").write_text("1,2\n3,nan\n")
    with pytest.raises(ValueError, match=r"t.csv, line 2, column 2: 'nan' is not finite"):
        load_raw(user(tmp_path / "t.csv"))


def test_inf_in_an_array(tmp_path):
    a = np.zeros((5, 3))
    a[3, 2] = np.inf
    np.save(tmp_path / "a.npy", a)
    with pytest.raises(ValueError, match=r"a.npy: example 3, dimension 2 is inf; NaN and inf are not allowed"):
        build_datasets(user(tmp_path / "a.npy"))


@pytest.mark.parametrize("name, content", [("e.csv", ""), ("h.csv", "a,b\n")])
def test_empty_csv(tmp_path, name, content):
    (tmp_path / name).write_text(content)
    with pytest.raises(ValueError, match=rf"{name}: (the file is empty|only a header line, no data rows)"):
        load_raw(user(tmp_path / name))


def test_empty_array(tmp_path):
    np.save(tmp_path / "a.npy", np.zeros((0, 4)))
    with pytest.raises(ValueError, match=r"a.npy: the data are empty \(shape \(0, 4\)\)"):
        build_datasets(user(tmp_path / "a.npy"))


def test_empty_image_folder(tmp_path):
    (tmp_path / "notes.txt").write_text("no images here")
    with pytest.raises(ValueError, match="no images found"):
        load_raw(user(tmp_path))


def test_a_file_that_is_not_an_image(tmp_path):
    (tmp_path / "a.png").write_bytes(b"not a png")
    with pytest.raises(ValueError, match=r"a.png: cannot read as an image"):
        load_raw(user(tmp_path))


def test_fractions_that_leave_no_training_data(tmp_path):
    np.save(tmp_path / "a.npy", np.zeros((1, 4)))
    with pytest.raises(ValueError, match="the training split is empty .*lower data.valid_fraction"):
        build_datasets(user(tmp_path / "a.npy", test_fraction=0.9))


def test_bernoulli_on_grayscale_without_binarization_suggests_the_fix():
    from aevb.config import ModelConfig
    from aevb.models.vae import build_model
    from aevb.training.loop import check_data_fits

    splits, info = build_datasets(DataConfig(name="digits", binarize="none"), "bernoulli")
    model = build_model(ModelConfig(latent_dim=2, hidden=[4]), info, train_mean=splits.train.mean(0))
    with pytest.raises(ValueError, match=r"bernoulli likelihood needs binary values 0/1.*--binarize dynamic"):
        check_data_fits(model, splits, info)


def test_binarize_on_real_data_is_refused(tmp_path):
    np.save(tmp_path / "a.npy", np.array([[-1.0, 2.0], [3.0, 4.5]]))
    with pytest.raises(ValueError, match="binarize = 'dynamic' needs data with a known range .*use --binarize none"):
        build_datasets(user(tmp_path / "a.npy", binarize="dynamic", valid_fraction=0, test_fraction=0))


def test_an_integer_level_likelihood_on_non_integer_data_suggests_the_fix(tmp_path, monkeypatch):
    from aevb.models import likelihoods

    class IntegerLikelihood(likelihoods.Likelihood):
        wants_integer_levels = True

    monkeypatch.setitem(likelihoods.LIKELIHOODS, "integer_test", IntegerLikelihood)
    np.save(tmp_path / "a.npy", np.array([[0.5, 0.25], [0.2, 1.0]]))
    with pytest.raises(ValueError, match=r"likelihood integer_test models integer levels but .*a.npy.* not integers"
                                         r".*continuous_bernoulli"):
        build_datasets(user(tmp_path / "a.npy", valid_fraction=0, test_fraction=0), "integer_test")


def test_a_split_protocol_on_a_set_without_protocols_is_refused():
    with pytest.raises(ValueError, match="data.split = 'iwae': digits has no named split protocols"):
        build_datasets(DataConfig(name="digits", split="iwae"))
