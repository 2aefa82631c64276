"""The user's own files: .npy/.npz arrays, image folders and CSV tables, with inferred support."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from aevb.config import DataConfig
from aevb.data import build_datasets, load_raw


def cfg(path, **kw):
    return DataConfig(name=str(path), valid_fraction=kw.pop("valid_fraction", 0.0),
                      test_fraction=kw.pop("test_fraction", 0.0), **kw)


def sorted_rows(t: torch.Tensor) -> list:
    return sorted(map(tuple, t.tolist()))


def test_uint8_npy_is_8bit_and_scaled_by_255(tmp_path):
    a = np.random.default_rng(0).integers(0, 256, (10, 4, 3)).astype(np.uint8)
    np.save(tmp_path / "a.npy", a)
    splits, info = build_datasets(cfg(tmp_path / "a.npy"), "gaussian")
    assert info.shape == (4, 3) and info.levels == 256 and info.support == "unit_interval"
    assert sorted_rows(splits.train) == sorted_rows(torch.as_tensor(a.reshape(10, 12) / 255.0, dtype=torch.float32))


@pytest.mark.parametrize("values, support, levels", [
    (np.array([[0, 1], [1, 1], [0, 0]], np.int64), "binary", 2),
    (np.array([[0.0, 0.25], [0.5, 1.0], [0.75, 0.1]]), "unit_interval", None),
    (np.array([[-1.5, 2.0], [3.0, 0.5], [0.0, 7.25]]), "real", None),
    (np.array([[0.0, 17.0], [255.0, 3.0], [4.0, 5.0]]), "unit_interval", 256),  # integers 0..255 as floats
    (np.array([[0, 16], [3, 7], [12, 9]], np.int64), "real", None),  # counts 0..16: no known range
])
def test_support_is_inferred_from_the_values(tmp_path, values, support, levels):
    np.save(tmp_path / "v.npy", values)
    splits, info = build_datasets(cfg(tmp_path / "v.npy", binarize="none"), "gaussian")
    assert info.support == support and info.levels == levels
    scale = 255.0 if levels == 256 else 1.0
    assert sorted_rows(splits.train) == sorted_rows(torch.as_tensor(values / scale, dtype=torch.float32))


def test_npz_picks_the_key_and_reads_labels(tmp_path):
    x = np.arange(24, dtype=np.float64).reshape(6, 4) / 23
    np.savez(tmp_path / "d.npz", features=x, other=np.zeros((6, 2)), labels=np.arange(6) % 2)
    with pytest.raises(ValueError, match="holds several arrays .*data.key"):
        build_datasets(cfg(tmp_path / "d.npz"), "gaussian")
    splits, info = build_datasets(cfg(tmp_path / "d.npz", key="features"), "gaussian")
    assert info.shape == (4,)
    order = torch.argsort(splits.train[:, 0])
    assert torch.equal(splits.train_labels[order], torch.as_tensor(np.arange(6) % 2))


def test_npz_label_count_must_match(tmp_path):
    np.savez(tmp_path / "d.npz", x=np.zeros((5, 3)), y=np.zeros(4))
    with pytest.raises(ValueError, match=r"d.npz: 5 examples but 4 labels"):
        load_raw(cfg(tmp_path / "d.npz"))


def make_image(path, size, mode="L", value=0):
    w, h = size
    rng = np.random.default_rng(value)
    shape = (h, w) if mode == "L" else (h, w, 3)
    a = rng.integers(0, 256, shape).astype(np.uint8)
    Image.fromarray(a, mode).save(path)
    return a


def test_image_folder_with_class_subfolders_gives_labels_and_names(tmp_path):
    arrays = {}
    for c, name in enumerate(["cat", "dog"]):
        (tmp_path / name).mkdir()
        for i in range(3):
            arrays[(c, i)] = make_image(tmp_path / name / f"{i}.png", (5, 4), value=10 * c + i)
    raw = load_raw(cfg(tmp_path))
    assert raw.x.shape == (6, 4, 5) and raw.label_names == ["cat", "dog"]
    assert raw.y.tolist() == [0, 0, 0, 1, 1, 1]
    assert np.array_equal(raw.x[4], arrays[(1, 1)])
    splits, info = build_datasets(cfg(tmp_path), "gaussian")
    assert info.label_names == ["cat", "dog"] and info.support == "unit_interval" and info.num_dims == 20


def test_rgb_images_are_channels_first_and_grayscale_ones_are_promoted(tmp_path):
    rgb = make_image(tmp_path / "a.png", (5, 4), "RGB", 1)
    gray = make_image(tmp_path / "b.png", (5, 4), "L", 2)
    raw = load_raw(cfg(tmp_path))
    assert raw.shape == (3, 4, 5)
    assert np.array_equal(raw.x[0], rgb.transpose(2, 0, 1))
    assert all(np.array_equal(raw.x[1, c], gray) for c in range(3))


def test_mixed_image_sizes_need_image_size(tmp_path):
    make_image(tmp_path / "a.png", (5, 4))
    make_image(tmp_path / "b.png", (6, 4))
    with pytest.raises(ValueError, match=r"a.png is 4x5 but .*b.png is 4x6 .*data.image_size=HxW"):
        load_raw(cfg(tmp_path))
    raw = load_raw(cfg(tmp_path, image_size="7x3"))
    assert raw.x.shape == (2, 7, 3)


def test_csv_with_header_and_label_column(tmp_path):
    (tmp_path / "t.csv").write_text("a,b,kind\n1.5,-2,x\n0.5,3,y\n2.5,1,x\n")
    raw = load_raw(cfg(tmp_path / "t.csv", label_column="kind"))
    assert raw.x.tolist() == [[1.5, -2.0], [0.5, 3.0], [2.5, 1.0]]
    assert raw.y.tolist() == [0, 1, 0] and raw.label_names == ["x", "y"] and raw.max_value is None


def test_csv_without_header_and_numeric_label_index(tmp_path):
    (tmp_path / "t.csv").write_text("7,0.5,0.25\n3,1,0\n")
    raw = load_raw(cfg(tmp_path / "t.csv", label_column="0"))
    assert raw.x.tolist() == [[0.5, 0.25], [1.0, 0.0]] and raw.y.tolist() == [7, 3]
    assert raw.max_value == 1.0 and not raw.binary


def test_csv_standardize_uses_the_training_mean_and_std(tmp_path):
    rng = np.random.default_rng(0)
    table = rng.normal(3.0, 2.0, (40, 3))
    np.savetxt(tmp_path / "t.csv", table, delimiter=",")
    splits, info = build_datasets(cfg(tmp_path / "t.csv", standardize=True, valid_fraction=0.25), "gaussian")
    train = splits.train.double()
    assert torch.allclose(train.mean(0), torch.zeros(3, dtype=torch.float64), atol=1e-6)
    assert torch.allclose(train.std(0), torch.ones(3, dtype=torch.float64), atol=1e-6)
    mean, std = np.array(info.standardization["mean"]), np.array(info.standardization["std"])
    restored = splits.valid.double().numpy() * std + mean
    distance = np.abs(restored[:, None, :] - table[None, :, :]).max(axis=2).min(axis=1)  # to the nearest row
    assert len(restored) == 10 and distance.max() < 1e-5 and info.support == "real"
    assert np.allclose(mean, table.mean(0), atol=1.0) and not np.allclose(mean, table.mean(0), atol=1e-9)


def test_standardize_is_refused_for_image_data(tmp_path):
    np.save(tmp_path / "a.npy", np.zeros((4, 3), np.uint8) + 7)
    with pytest.raises(ValueError, match="data.standardize is for real-valued data"):
        build_datasets(cfg(tmp_path / "a.npy", standardize=True), "gaussian")


def test_max_value_scales_integer_data_that_are_not_8_bit(tmp_path):
    """Digits written as integers 0..16 are scaled by the given maximum, not by 1/255."""
    values = np.array([[0, 16], [3, 7], [12, 9], [16, 1]], np.int64)
    np.save(tmp_path / "v.npy", values)
    splits, info = build_datasets(cfg(tmp_path / "v.npy", binarize="none", max_value=16), "gaussian")
    assert info.support == "unit_interval" and info.levels == 17
    assert sorted_rows(splits.train) == sorted_rows(torch.as_tensor(values / 16.0, dtype=torch.float32))
    with pytest.raises(ValueError, match=r"data.max_value = 10, but the values span \[0, 16\]"):
        build_datasets(cfg(tmp_path / "v.npy", binarize="none", max_value=10), "gaussian")
