"""The command line: help texts, refusals of bad values, and a real train run."""

import pytest
from conftest import run_cli

from aevb.cli import COMMANDS, main


def test_every_command_in_the_table_has_help(capsys):
    for name in COMMANDS:
        with pytest.raises(SystemExit) as e:
            main([name, "--help"])
        assert e.value.code == 0
        assert "usage: aevb " + name in capsys.readouterr().out


def test_train_help_documents_every_option_with_its_default(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    for flag in ("--data", "--binarize", "--likelihood", "--latent-dim", "--hidden", "--activation", "--arch",
                 "--objective", "--kl", "--samples", "--beta", "--epochs", "--batch-size", "--optimizer",
                 "--lr", "--seed", "--device", "--out", "--preset", "--config", "--quiet", "--set"):
        assert flag in out, flag
    assert "(default: mnist5k; data.name)" in out
    assert "(default: 0.001; train.lr)" in out


def test_wrong_option_value_is_refused_with_the_allowed_values(capsys):
    with pytest.raises(SystemExit) as e:
        main(["train", "--optimizer", "sgd"])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "invalid choice: 'sgd'" in err and "'adam'" in err and "'adagrad'" in err


def test_bad_set_override_names_the_key_and_allowed_keys(tmp_path, capsys):
    code = main(["train", "--set", "train.lrr=0.1", "--out", str(tmp_path / "r")])
    assert code == 2
    err = capsys.readouterr().err
    assert "train.lrr" in err and "lr" in err


def test_train_command_prints_run_directory_and_test_elbo(tmp_path):
    out = tmp_path / "run"
    r = run_cli("train", "--data", "digits", "--epochs", "1", "--hidden", "16", "--latent-dim", "2",
                "--quiet", "--out", out)
    assert r.returncode == 0, r.stderr
    assert f"run directory: {out}" in r.stdout
    assert "test ELBO:" in r.stdout and "nats per example" in r.stdout
    assert (out / "checkpoints").is_dir()
