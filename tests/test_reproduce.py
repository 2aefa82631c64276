"""Smoke and unit tests of the paper-reproduction recipes (benchmarks/reproduce_aevb.py, reproduce_iwae.py).

Each recipe runs for a few steps on scikit-learn's digits so it cannot rot; the settings the
recipes promise (the papers') and the L_k arithmetic are checked against hand computations.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import reproduce_aevb as aevb_recipe  # noqa: E402
import reproduce_iwae as iwae_recipe  # noqa: E402
from _recipes import curves  # noqa: E402


def test_aevb_panels_use_the_papers_settings(tmp_path):
    mnist = aevb_recipe.panel_config("mnist", 3, 1e7, str(tmp_path))
    assert (mnist.model.hidden, mnist.model.latent_dim, mnist.model.activation) == ([500], 3, "tanh")
    assert mnist.model.likelihood == "bernoulli" and mnist.data.split == "standard"
    assert (mnist.train.optimizer, mnist.train.lr, mnist.train.batch_size) == ("adagrad", 0.01, 100)
    assert mnist.objective.num_samples == 1 and mnist.objective.name == "elbo"
    assert mnist.train.weight_decay == 1.0  # the N(0, I) prior (docs/training.md)
    assert mnist.train.epochs == 200  # 200 x 50,000 = 1e7 examples
    assert Path(mnist.out) == tmp_path / "mnist-z3"
    frey = aevb_recipe.panel_config("frey", 20, 1e7, str(tmp_path))
    assert (frey.model.hidden, frey.model.latent_dim) == ([200], 20)
    assert (frey.model.likelihood, frey.model.sigma) == ("gaussian", "predicted")
    assert frey.train.epochs == math.ceil(1e7 / 1573)
    assert frey.train.epochs * 1573 >= 1e7


def test_aevb_recipe_runs_resumes_and_plots(tmp_path):
    out = tmp_path / "aevb"
    assert aevb_recipe.main(["--panel", "mnist:3", "--tiny", "--examples", "1000", "--out", str(out)]) == 0
    records = [json.loads(line) for line in (out / "mnist-z3" / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [1]
    assert math.isfinite(records[-1]["train/elbo"]) and math.isfinite(records[-1]["valid/elbo"])
    # a longer --examples continues the same run directory
    assert aevb_recipe.main(["--panel", "mnist:3", "--tiny", "--examples", "2000", "--out", str(out)]) == 0
    records = [json.loads(line) for line in (out / "mnist-z3" / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [1, 2]
    assert records[1]["examples"] == 2 * records[0]["examples"]
    assert aevb_recipe.main(["--panel", "frey:2", "--tiny", "--examples", "1000", "--out", str(out)]) == 0
    figure = tmp_path / "fig.png"
    assert aevb_recipe.main(["--plot", "--out", str(out), "--figure", str(figure), "--min-examples", "1"]) == 0
    assert figure.stat().st_size > 1000
    table = aevb_recipe.summary_table(str(out)).splitlines()
    row = next(line for line in table if line.startswith("| mnist Z=3 |"))
    assert f"| {records[1]['examples']:.3g} | 2 | {records[1]['train/elbo']:.2f} |" in row
    assert "| mnist Z=5 | not run | | | | | |" in table


def test_aevb_recipe_refuses_an_unknown_panel(tmp_path, capsys):
    with pytest.raises(SystemExit):
        aevb_recipe.main(["--panel", "mnist:7", "--out", str(tmp_path)])
    assert "mnist:3" in capsys.readouterr().err


def test_curves_keep_finite_values_in_order():
    records = [{"examples": 10, "train/elbo": -5.0, "valid/elbo": float("nan")},
               {"examples": 20, "valid/elbo": -4.0}, {"examples": 30, "train/elbo": -3.0, "valid/elbo": -2.5}]
    c = curves(records)
    assert c["train"] == ([10, 30], [-5.0, -3.0])
    assert c["valid"] == ([20, 30], [-4.0, -2.5])


def test_iwae_rows_use_the_papers_settings(tmp_path):
    vae = iwae_recipe.row_config("vae", 1, 3280, str(tmp_path))
    assert vae.model.hidden == [200, 200] and vae.model.latent_dim == 50 and vae.model.activation == "tanh"
    assert (vae.data.name, vae.data.split, vae.data.binarize) == ("mnist", "iwae", "dynamic")
    assert (vae.train.optimizer, vae.train.adam_eps, vae.train.batch_size) == ("adam", 1e-4, 20)
    assert (vae.train.schedule, vae.train.lr, vae.train.epochs) == ("iwae", 1e-3, 3280)
    assert (vae.objective.name, vae.objective.num_samples) == ("elbo", 1)
    iwae = iwae_recipe.row_config("iwae", 5, 10, str(tmp_path))
    assert (iwae.objective.name, iwae.objective.num_samples, iwae.train.epochs) == ("iwae", 5, 10)
    assert Path(iwae.out) == tmp_path / "iwae-k5"
    with pytest.raises(ValueError, match="k = 1"):
        iwae_recipe.row_config("vae", 5, 10, str(tmp_path))
    two = iwae_recipe.row_config("iwae", 5, 820, str(tmp_path), layers=2)  # Burda et al.'s two-layer MNIST model
    assert (two.model.latent_dims, two.model.hidden, two.model.stochastic_hidden) == ([100, 50], [200, 200], [100, 100])
    assert (two.data.split, two.train.batch_size, two.train.schedule, two.train.epochs) == ("iwae", 20, "iwae", 820)
    assert Path(two.out) == tmp_path / "iwae2-k5" and iwae_recipe.PAPER_NLL[("iwae2", 5)] == 83.89


def test_iwae_recipe_trains_evaluates_and_tabulates(tmp_path, capsys):
    out = tmp_path / "iwae"
    assert iwae_recipe.main(["--row", "iwae", "--k", "5", "--epochs", "1", "--tiny", "--out", str(out),
                             "--eval-k", "20"]) == 0
    ev = json.loads((out / "iwae-k5" / "iwae_eval.json").read_text())
    summary = json.loads((out / "iwae-k5" / "summary.json").read_text())
    assert ev["k"] == 20 and ev["n"] == summary["test"]["n"] and 0 <= ev["active_units"] <= 50
    # same test binarization (seed 1234) as the trainer's final ELBO; L_20 >= ELBO on average
    assert ev["log_px"] > summary["test"]["elbo"]
    assert "| IWAE k=5 | 1 |" in capsys.readouterr().out


def test_iwae_recipe_evaluation_is_the_librarys(tmp_path):
    """The recipe's L_k, ELBO and active units are aevb.inference.evaluate's on the test split (same seed)."""
    from aevb.data import build_datasets
    from aevb.inference.evaluate import evaluate
    from aevb.training.checkpoint import load_run

    out = tmp_path / "iwae"
    assert iwae_recipe.main(["--row", "vae", "--k", "1", "--epochs", "1", "--tiny", "--out", str(out),
                             "--no-eval"]) == 0
    assert not (out / "vae-k1" / "iwae_eval.json").exists()
    run_dir = str(out / "vae-k1")
    got = iwae_recipe.evaluate_run(run_dir, k=10, limit=60)
    assert not got["complete"] and got["n"] == 60 and got["test_size"] == 180  # 60 of 180 test digits
    cfg, model, _ = load_run(run_dir)
    splits, info = build_datasets(cfg.data, cfg.model.likelihood)
    want = evaluate(model, splits.test[:60], info, k=10, seed=1234, progress=False)
    assert got["log_px"] == want["log_px"] and got["elbo"] == want["elbo"]
    assert got["active_units"] == want["active_units"] and got["nll"] == -want["log_px"]
    assert json.loads((out / "vae-k1" / "iwae_eval.json").read_text())["log_px"] == got["log_px"]


def test_iwae_recipe_evaluation_of_two_layers_counts_active_units_per_layer(tmp_path):
    """For two stochastic layers the recipe's JSON keeps the evaluator's per-layer counts, summing to the total."""
    from aevb.data import build_datasets
    from aevb.inference.evaluate import evaluate
    from aevb.training.checkpoint import load_run

    out = tmp_path / "iwae"
    assert iwae_recipe.main(["--row", "iwae", "--k", "5", "--layers", "2", "--epochs", "1", "--tiny", "--out", str(out),
                             "--no-eval"]) == 0
    run_dir = str(out / "iwae2-k5")
    got = iwae_recipe.evaluate_run(run_dir, k=10, limit=40)
    cfg, model, _ = load_run(run_dir)
    splits, info = build_datasets(cfg.data, cfg.model.likelihood)
    want = evaluate(model, splits.test[:40], info, k=10, seed=1234, progress=False)
    assert got["log_px"] == want["log_px"] and len(got["latent_dims"]) == 2
    assert got["active_units_per_layer"] == want["active_units_per_layer"]
    assert sum(got["active_units_per_layer"]) == got["active_units"] <= sum(got["latent_dims"])


def test_iwae_recipe_prints_how_to_continue_and_resumes_a_moved_run(tmp_path, capsys):
    out = tmp_path / "iwae"
    assert iwae_recipe.main(["--row", "vae", "--k", "1", "--epochs", "1", "--tiny", "--no-eval", "--out", str(out)]) == 0
    run_dir = out / "vae-k1"
    assert f"continue with: python benchmarks/reproduce_iwae.py --resume {run_dir} --threads 1" in capsys.readouterr().out
    moved = tmp_path / "restored" / "vae-k1"  # e.g. restored into a new checkout
    moved.parent.mkdir()
    run_dir.rename(moved)
    cfg = json.loads((moved / "config.json").read_text())
    cfg["train"]["epochs"] = 2  # a resumable field: train one more epoch from the checkpoint
    (moved / "config.json").write_text(json.dumps(cfg))
    assert iwae_recipe.main(["--resume", str(moved), "--eval-k", "3", "--eval-limit", "20"]) == 0
    records = [json.loads(line) for line in (moved / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [1, 2]
    assert records[1]["examples"] == 2 * records[0]["examples"]
    ev = json.loads((moved / "iwae_eval.json").read_text())
    assert ev["k"] == 3 and ev["n"] == 20 and math.isfinite(ev["log_px"])


def test_the_budget_curve_recovers_a_known_power_law_and_refuses_gains_that_do_not_shrink():
    import budget_curve

    a, b, c = 40.0, 0.55, -85.0
    points = [(n, c - a * n ** -b) for n in (10.0, 100.0, 820.0)]
    fitted = budget_curve.fit_power_law(points[::-1])  # any order
    assert fitted == pytest.approx((a, b, c), rel=1e-9)
    assert c - a * 3280 ** -b == pytest.approx(fitted[2] - fitted[0] * 3280 ** -fitted[1], abs=1e-9)
    with pytest.raises(ValueError, match="grow"):
        budget_curve.fit_power_law([(10, -100.0), (100, -101.0), (820, -99.0)])
    with pytest.raises(ValueError, match="no power law"):  # the second gain larger than the first: no asymptote
        budget_curve.fit_power_law([(10, -100.0), (100, -99.0), (820, -90.0)])


def test_the_budget_curve_with_a_given_exponent_recovers_the_law_from_two_points(capsys):
    import budget_curve

    a, b, c = 53.05, 0.489, -84.3
    points = [(n, c - a * n ** -b) for n in (820.0, 10.0)]
    assert budget_curve.fit_with_exponent(points, b) == pytest.approx((a, b, c), rel=1e-12)
    # the three-point fit of the same law gives the same curve, so the two agree on it
    assert budget_curve.fit_power_law(points + [(100.0, c - a * 100.0 ** -b)]) == pytest.approx((a, b, c), rel=1e-9)
    with pytest.raises(ValueError, match="grow"):
        budget_curve.fit_with_exponent([(10, -90.0), (820, -95.0)], b)
    with pytest.raises(ValueError, match="two"):
        budget_curve.fit_with_exponent(points + [(100.0, -90.0)], b)
    # the command line prints the same law's prediction: with b = 1/2 the two points give a and c by hand
    assert budget_curve.main(["--point", "10:-100", "--point", "820:-88", "--exponent", "0.5"]) == 0
    a2 = 12.0 / (10 ** -0.5 - 820 ** -0.5)
    c2 = -88.0 + a2 * 820 ** -0.5
    assert f"3,280 passes: {c2 - a2 * 3280 ** -0.5:.2f} nats" in capsys.readouterr().out
