"""Every command that reads a run directory fails the same way on bad input: exit code != 0 and
one line ``aevb CMD: error: ...`` naming the problem, never a traceback. ``aevb report`` is the
exception by design: it still writes its (partial) page, warns ``aevb report: warning: ...`` and
exits 1."""

import shutil

import pytest
from conftest import tiny_config

from aevb.cli import COMMANDS, build_parser, main

# command -> (arguments after the run directory, argv prefix that takes the run directory,
#             an unknown option value (choices option where the command has one), what the message names)
RUN_DIR_COMMANDS = {
    "evaluate": ([], ["evaluate"], ["--split", "dev"], "invalid choice: 'dev'"),
    "score": (["--k", "2", "--out", "{tmp}/s.csv"], ["score"], ["--split", "dev"], "invalid choice: 'dev'"),
    "encode": (["--out", "{tmp}/z.npz"], ["encode"], ["--split", "dev"], "invalid choice: 'dev'"),
    "sample": (["--out", "{tmp}/s.png"], ["sample"], ["--which", "latest"], "unknown checkpoint 'latest'"),
    "reconstruct": (["--out", "{tmp}/r.png"], ["reconstruct"], ["--split", "dev"], "invalid choice: 'dev'"),
    "plot": (["--out", "{tmp}/plots"], ["plot"], ["--which", "latest"], "unknown checkpoint 'latest'"),
    "report": (["--out", "{tmp}/r.html"], ["report"], ["--which", "latest"], "unknown checkpoint 'latest'"),
    "export": (["--out", "{tmp}/export"], ["export"], ["--format", "zip"], "invalid choice: 'zip'"),
    "train": (["--epochs", "2", "--quiet"], ["train", "--resume"], ["--device", "tpu"], "invalid choice: 'tpu'"),
    "impute": (["--data", "{tmp}/x.csv", "--out", "{tmp}/o.csv"], ["impute"], ["--device", "tpu"], "invalid choice: 'tpu'"),
}
CASES = ("missing run dir", "damaged weights", "unknown option value")


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    from aevb.training.loop import train

    return train(tiny_config(tmp_path_factory.mktemp("errors"), train={"epochs": 1},
                             model={"latent_dim": 2, "hidden": [8]}))


def test_the_table_lists_every_command_that_takes_a_run_dir():
    sub = next(a for a in build_parser()._actions if a.dest == "command")
    takes_run_dir = {name for name, p in sub.choices.items()
                     if any(a.dest in ("run_dir", "resume") for a in p._actions)}
    assert takes_run_dir == set(RUN_DIR_COMMANDS) and takes_run_dir <= set(COMMANDS)


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("command", sorted(RUN_DIR_COMMANDS))
def test_bad_run_dirs_and_values_give_one_line_errors(command, case, run_dir, tmp_path, capsys):
    rest, prefix, bad_option, bad_message = RUN_DIR_COMMANDS[command]
    rest = [a.format(tmp=tmp_path) for a in rest]
    run = tmp_path / "run"
    if case != "missing run dir":
        shutil.copytree(run_dir, run)
    if case == "damaged weights":
        for weights in run.glob("checkpoints/*/weights.safetensors"):
            weights.write_bytes(b"not a safetensors file")
    argv = prefix + [str(run)] + rest + (bad_option if case == "unknown option value" else [])
    try:
        code = main(argv)
    except SystemExit as e:  # argparse refuses an invalid choice before the command runs
        code = e.code
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.startswith("aevb ")]
    assert len(lines) == 1, err
    expected = {"missing run dir": "does not exist" if command != "train" else "no config.json there",
                "damaged weights": "weights.safetensors", "unknown option value": bad_message}[case]
    assert expected in lines[0], err
    if command == "report" and case != "missing run dir":
        assert code == 1 and lines[0].startswith("aevb report: warning: ")
        assert (tmp_path / "r.html").is_file()  # the partial page is still written
    else:
        assert code != 0 and lines[0].startswith(f"aevb {command}: error: ")
