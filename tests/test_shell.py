"""The shell experience: plain logs when piped, quiet exit on a closed pipe, no prefix matching,
"did you mean" hints, the resume command on Ctrl-C, IDX folders as --data, normal file modes."""

import gzip
import os
import stat
import struct
import subprocess
import sys

import numpy as np
import pytest
from conftest import REPO, run_cli, tiny_config

from aevb.cli import main


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    from aevb.training.loop import train

    return train(tiny_config(tmp_path_factory.mktemp("shell"), train={"epochs": 1}, model={"latent_dim": 2, "hidden": [8]}))


def test_a_piped_training_log_has_plain_epoch_lines_and_no_carriage_returns(tmp_path):
    r = run_cli("train", "--data", "digits", "--epochs", "2", "--hidden", "8", "--latent-dim", "2",
                "--out", tmp_path / "run")
    assert r.returncode == 0, r.stderr
    assert "\r" not in r.stdout + r.stderr
    assert "epoch   1/2" in r.stdout and "epoch   2/2" in r.stdout


def test_a_closed_pipe_ends_quietly(run_dir):
    env = dict(os.environ, PYTHONPATH=str(REPO / "src"), OMP_NUM_THREADS="1")
    proc = subprocess.Popen([sys.executable, "-m", "aevb", "evaluate", str(run_dir), "--k", "2", "--quiet"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    proc.stdout.close()  # the reader is gone before anything is written (`| head` that already left)
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=300) == 141
    assert "Broken pipe" not in err and "Traceback" not in err and "Exception ignored" not in err


@pytest.mark.parametrize("argv, hint", [(["train", "--likelihod", "gaussian"], "did you mean --likelihood?"),
                                        (["train", "--epoch", "3"], "did you mean --epochs?"),
                                        (["trian"], "did you mean 'train'?")])
def test_typos_get_a_suggestion_and_prefixes_are_not_accepted(argv, hint, capsys):
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2 and hint in capsys.readouterr().err


def test_ctrl_c_prints_the_exact_resume_command(run_dir):
    from aevb.commands.train import interrupted_message

    message = interrupted_message(str(run_dir))
    assert message.endswith(f"aevb train --resume {run_dir}") and "step-" in message
    assert "nothing to resume" in interrupted_message(str(run_dir / "never-written"))


def test_ctrl_c_during_training_names_the_run_folder(tmp_path, monkeypatch, capsys):
    import aevb.training.loop as loop

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(loop, "train", interrupted)
    assert main(["train", "--data", "digits", "--out", str(tmp_path / "x")]) == 130
    assert f"{tmp_path / 'x'}; nothing to resume" in capsys.readouterr().err


def _write_idx(path, array: np.ndarray) -> None:
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


def test_data_dir_holding_idx_files_is_read(tmp_path):
    from aevb.config import DataConfig
    from aevb.data import build_datasets

    rng = np.random.default_rng(0)
    folder = tmp_path / "fashion-mnist"
    folder.mkdir()
    for prefix, n in (("train", 60), ("t10k", 20)):
        _write_idx(folder / f"{prefix}-images-idx3-ubyte.gz", rng.integers(0, 256, (n, 6, 5)))
        _write_idx(folder / f"{prefix}-labels-idx1-ubyte.gz", rng.integers(0, 10, n))
    splits, info = build_datasets(DataConfig(name=str(folder)), "bernoulli")
    assert info.shape == (6, 5) and info.levels == 256 and len(splits.test) == 20
    assert len(splits.train) + len(splits.valid) == 60 and info.label_names[0] == "T-shirt/top"


def test_written_files_have_normal_modes(run_dir, tmp_path):
    from aevb import AEVB

    old = os.umask(0o022)
    try:
        for weights in run_dir.glob("checkpoints/*/weights.safetensors"):
            assert stat.S_IMODE(weights.stat().st_mode) == 0o644
        folder = AEVB(latent_dim=1, hidden=(4,), epochs=1).fit(np.eye(4)).save(tmp_path / "est")
        assert stat.S_IMODE((folder / "model.safetensors").stat().st_mode) == 0o644
    finally:
        os.umask(old)
