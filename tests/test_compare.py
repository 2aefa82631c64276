"""Honest comparisons: evaluate says what log p(x) is of and labels bits/dim by data kind; `aevb compare`
groups runs by what they model; train has --dequantize/--sigma/--standardize flags."""

import json

import pytest
from conftest import tiny_config

from aevb.cli import build_parser, main
from aevb.outputs.measure import comparison_key, protocol_text


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    from aevb.training.loop import train

    root = tmp_path_factory.mktemp("compare")
    small = {"latent_dim": 2, "hidden": [8]}
    made = {}
    for name, model, data in (("bernoulli", {}, {}), ("gaussian", {"likelihood": "gaussian"}, {}),
                              ("categorical", {"likelihood": "categorical"}, {}),
                              ("dequantized", {"likelihood": "gaussian"}, {"dequantize": "uniform"})):
        cfg = tiny_config(root / name, train={"epochs": 1}, model={**small, **model}, data=data)
        made[name] = train(cfg)
        assert main(["evaluate", str(made[name]), "--k", "4", "--quiet"]) == 0
    return made


def test_evaluate_labels_bits_per_dim_by_data_kind_and_never_says_none_binarization(runs, capsys):
    main(["evaluate", str(runs["bernoulli"]), "--k", "4", "--quiet"])
    out = capsys.readouterr().out
    assert "(bits/dim (binarized data))" in out and "log P(x) of binarized x" in out
    main(["evaluate", str(runs["gaussian"]), "--k", "4", "--quiet"])
    out = capsys.readouterr().out
    assert "none binarization" not in out and "no binarization (integer levels scaled to [0, 1])" in out
    assert "--dequantize uniform" in out and "a density" in out
    assert "sigma learned_shared = " in out  # the learned sigma is reported
    saved = json.loads((runs["gaussian"] / "eval.json").read_text())["test"]
    assert saved["sigma"]["mode"] == "learned_shared" and saved["sigma"]["value"] > 0
    main(["evaluate", str(runs["dequantized"]), "--k", "4", "--quiet"])
    assert "bits/dim (integer levels, dequantized bound)" in capsys.readouterr().out


def test_compare_groups_runs_by_what_they_model(runs, capsys):
    assert main(["compare"] + [str(runs[n]) for n in ("bernoulli", "gaussian", "categorical", "dequantized")]) == 0
    out = capsys.readouterr().out
    table = {line.split()[1]: line.split()[0] for line in out.splitlines()[1:5]}
    groups = {name: table[str(path)] for name, path in runs.items()}
    assert groups["categorical"] == groups["dequantized"]  # both bound the code length of the integer levels
    assert len({groups["bernoulli"], groups["gaussian"], groups["categorical"]}) == 3
    assert "cannot be ranked against each other" in out and "log P(x) of binarized x" in out


def test_comparison_keys_and_protocol_text():
    binarized = {"name": "mnist", "binarization": "dynamic", "support": "binary"}
    eight_bit = {"name": "mnist", "binarization": "none", "support": "8bit", "levels": 256}
    dequantized = {"name": "mnist", "binarization": "none", "support": "unit_interval", "levels": 256,
                   "dequantization": "uniform"}
    assert comparison_key(eight_bit) == comparison_key(dequantized) != comparison_key(binarized)
    assert protocol_text("none", 1234, eight_bit) == "no binarization (8-bit integers), seed 1234"


def test_train_has_dequantize_sigma_and_standardize_flags():
    args = build_parser().parse_args(["train", "--dequantize", "uniform", "--sigma", "learned_per_dim",
                                      "--standardize", "true"])
    assert (args.dequantize, args.sigma, args.standardize) == ("uniform", "learned_per_dim", "true")


def test_score_makes_its_folder_first_and_prints_the_runs_own_test_mean(runs, tmp_path, capsys):
    out = tmp_path / "new" / "folder" / "scores.csv"
    assert main(["score", str(runs["bernoulli"]), "--k", "4", "--quiet", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    own = json.loads((runs["bernoulli"] / "eval.json").read_text())["test"]["log_px"]
    assert out.is_file() and f"the run's own test split: mean log p(x) {own:.3f} nats" in printed
    assert "Nalisnick et al. 2019" in printed
