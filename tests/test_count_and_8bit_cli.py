"""Each count and discretized likelihood trains from the command line on tiny synthetic data, and
evaluate/score/encode/sample/reconstruct/plot/report/export work on its run."""

import json
import math

import numpy as np
import pytest

from aevb.cli import main


def write_counts(path, n=80, d=6, seed=0):
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(n, 2))
    mu = np.exp(0.5 * z @ rng.normal(size=(2, d)) + 1)
    x = rng.poisson(mu) * (rng.random((n, d)) > 0.2)
    np.savetxt(path, x, fmt="%d", delimiter=",")
    return x


def write_images(path, n=80, seed=0):
    rng = np.random.default_rng(seed)
    np.save(path, (rng.random((n, 6, 6)) * 255).astype(np.uint8))


CASES = [("poisson", "counts", []), ("nb", "counts", ["--set", "model.library_size=observed"]),
         ("zinb", "counts", ["--set", "model.dispersion=per_example"]),
         ("discretized_logistic", "images", []),
         ("discretized_logistic_mixture", "images", ["--set", "model.num_mixtures=2"])]


@pytest.mark.parametrize("likelihood, kind, extra", CASES, ids=[c[0] for c in CASES])
def test_likelihood_trains_from_the_cli_and_every_command_works_on_its_run(likelihood, kind, extra, tmp_path):
    data = tmp_path / ("counts.csv" if kind == "counts" else "images.npy")
    write_counts(data) if kind == "counts" else write_images(data)
    run = tmp_path / "run"
    assert main(["train", "--data", str(data), "--likelihood", likelihood, "--epochs", "1", "--latent-dim", "2",
                 "--hidden", "8", "--batch-size", "20", "--set", "eval.k=5", "--set", "train.quiet=true",
                 "--out", str(run), *extra]) == 0
    info = json.loads((run / "data.json").read_text())
    assert info["support"] == ("counts" if kind == "counts" else "8bit")
    assert main(["evaluate", str(run), "--k", "5", "--quiet", "--json"]) == 0
    result = json.loads((run / "eval.json").read_text())
    row = result[-1] if isinstance(result, list) else result
    text = json.dumps(row)
    assert "bits_per_dim" in text
    assert main(["score", str(run), "--data", str(data), "--out", str(tmp_path / "s.csv"), "--k", "3"]) == 0
    scores = np.genfromtxt(tmp_path / "s.csv", delimiter=",", names=True)
    assert len(scores) == 80 and np.all(np.isfinite(scores["log_px"])) and np.all(scores["log_px"] < 0)
    assert main(["encode", str(run), "--data", str(data), "--out", str(tmp_path / "e.csv")]) == 0
    assert main(["sample", str(run), "-n", "4", "--out", str(tmp_path / "s.png"), "--draws"]) == 0
    assert main(["reconstruct", str(run), "-n", "3", "--out", str(tmp_path / "r.png")]) == 0
    assert main(["plot", str(run), "--out", str(tmp_path / "plots")]) == 0
    assert main(["report", str(run)]) == 0 and (run / "report.html").is_file()
    assert main(["export", str(run), "--out", str(tmp_path / "export")]) == 0
    manifest = json.loads((tmp_path / "export" / "export.json").read_text())
    assert manifest["params_per_dim"] * math.prod(manifest["data_shape"]) == manifest["decoder"]["outputs"]["params"][1]


def test_count_likelihood_refuses_fractional_values_naming_example_and_column(tmp_path, capsys):
    data = tmp_path / "x.csv"
    x = write_counts(data).astype(float)
    x[5, 3] = 2.5
    np.savetxt(data, x, delimiter=",")
    code = main(["train", "--data", str(data), "--likelihood", "poisson", "--epochs", "1", "--set",
                 "data.test_fraction=0", "--set", "data.valid_fraction=0", "--set", "train.quiet=true",
                 "--out", str(tmp_path / "run")])
    assert code == 2
    assert "need non-negative integer counts, but example 5 (0-based, in file order), column 3 is 2.5" in capsys.readouterr().err
