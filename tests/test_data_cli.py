"""`aevb data list` and `aevb data show`."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from aevb.cli import main
from aevb.data import DATASETS
from tests.data_helpers import write_idx_set


def test_data_list_names_every_named_set_and_where_it_is(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("AEVB_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("AEVB_DATA_DIR", raising=False)
    write_idx_set(tmp_path / "cache" / "mnist")
    assert main(["data", "list"]) == 0
    out = capsys.readouterr().out
    for name in DATASETS:
        assert f"\n{name}\n" in f"\n{out}"
    assert f"found in {tmp_path / 'cache' / 'mnist'}" in out
    if Path("/usr/share/datasets/fashion-mnist").is_dir():  # Debian's dataset-fashion-mnist is installed here
        assert "found in /usr/share/datasets/fashion-mnist" in out
    else:
        assert "apt-get install dataset-fashion-mnist" in out
    assert f"not found (frey_rawface.mat or .npz via --data-dir DIR; searched {tmp_path / 'cache' / 'frey_face'})" in out


def test_data_show_prints_split_sizes_shape_range_and_support(tmp_path, capsys):
    x_train, _, x_test, _ = write_idx_set(tmp_path, num_train=59603, num_test=4)
    code = main(["data", "show", "mnist", "--data-dir", str(tmp_path), "--set", "data.split=iwae"])
    assert code == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "mnist: shape (28, 28) (784 dims), support unit_interval, levels 256, " \
                       "binarization none, dequantization none"
    rows = {line.split()[0]: line.split() for line in lines[4:7]}
    assert rows["train"][1] == "59,600" and rows["valid"][1] == "3" and rows["test"][1] == "4"
    valid = x_train[59600:] / 255.0
    assert float(rows["valid"][2]) == float(f"{valid.min():.4g}") and float(rows["valid"][3]) == float(f"{valid.max():.4g}")
    assert float(rows["test"][4]) == float(f"{(x_test / 255.0).mean():.4g}")


def test_data_show_of_a_user_file_and_its_errors(tmp_path, capsys):
    np.save(tmp_path / "a.npy", np.array([[-1.0, 2.0], [3.0, 4.5], [0.0, 1.0]]))
    assert main(["data", "show", str(tmp_path / "a.npy"), "--set", "data.test_fraction=0",
                 "--set", "data.valid_fraction=0"]) == 0
    out = capsys.readouterr().out
    assert "support real" in out and "train          3        -1       4.5" in out
    assert main(["data", "show", str(tmp_path / "missing.npy")]) == 2
    assert "aevb data: error: unknown data set" in capsys.readouterr().err
    assert main(["data", "show", "digits", "--set", "train.lr=1"]) == 2
    assert "only data.* options apply" in capsys.readouterr().err
