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
import torch

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


class _FixedWeights:
    """A stand-in model whose log weights are a known table, handed out chunk by chunk."""

    def __init__(self, log_w: torch.Tensor):
        self.log_w, self.used = log_w, 0  # (K, N)
        self.calls = []

    def log_weights(self, x, num_samples):
        rows = self.log_w[self.used:self.used + num_samples, self.offset:self.offset + len(x)]
        self.calls.append((num_samples, len(x)))
        self.used += num_samples
        if self.used == len(self.log_w):
            self.used, self.offset = 0, self.offset + len(x)
        return rows


def test_iwae_bound_combines_chunks_exactly():
    log_w = torch.randn(7, 5, dtype=torch.float64) * 3
    model = _FixedWeights(log_w)
    model.offset = 0
    got = iwae_recipe.iwae_bound(model, torch.zeros(5, 2), k=7, chunk=3, batch_size=2)
    want = [math.log(sum(math.exp(float(v)) for v in log_w[:, n]) / 7) for n in range(5)]
    assert torch.allclose(got, torch.tensor(want, dtype=torch.float64), atol=1e-12)
    assert [c[0] for c in model.calls] == [3, 3, 1] * 3  # chunks of 3, 3, 1 for each of 3 batches


def test_iwae_bound_with_one_sample_averages_to_the_analytic_elbo(tmp_path):
    """L_1 = log w is a one-sample ELBO: its mean over many draws matches the closed-form-KL ELBO."""
    from aevb.evaluate import evaluate_elbo
    from aevb.model import build_model
    from aevb.data import build_datasets

    cfg = iwae_recipe.row_config("vae", 1, 1, str(tmp_path), tiny=True)
    splits, info = build_datasets(cfg.data, cfg.model.likelihood)
    torch.manual_seed(0)
    model = build_model(cfg.model, info, train_mean=splits.train.mean(0)).eval()
    x = (splits.test[:4] > 0.5).float()
    reps = 2000
    torch.manual_seed(1)
    with torch.no_grad():
        l1 = iwae_recipe.iwae_bound(model, x.repeat(reps, 1), k=1, chunk=1, batch_size=1000).view(reps, 4)
    # the reference: reconstruction term averaged over 20,000 draws plus the closed-form KL
    elbo = [evaluate_elbo(model, x[i:i + 1], num_samples=20000)["elbo"] for i in range(4)]
    se = l1.std(0) / math.sqrt(reps)
    assert torch.all((l1.mean(0) - torch.tensor(elbo, dtype=torch.float64)).abs() < 4 * se)
    with torch.no_grad():
        l50 = iwae_recipe.iwae_bound(model, x, k=50, chunk=20, batch_size=2)
    assert torch.all(l50 > torch.tensor(elbo, dtype=torch.float64))  # L_50 >= L_1 (= ELBO) by Jensen


def test_active_units_count_posterior_means_that_vary():
    class Posterior:
        def __init__(self, mean):
            self.mean = mean

    class Model:
        def posterior(self, x):
            return Posterior(x)

    x = torch.stack([torch.linspace(-1, 1, 11), torch.full((11,), 0.3), 0.05 * torch.linspace(-1, 1, 11)], dim=1)
    count, activity = iwae_recipe.active_units(Model(), x)
    assert count == 1  # var of linspace(-1, 1, 11) = 0.44; a constant: 0; 0.05 x it: 0.0011 < 0.01
    assert activity[0] == pytest.approx(0.44, abs=1e-6) and activity[1] == 0.0


def test_iwae_recipe_trains_evaluates_and_tabulates(tmp_path, capsys):
    out = tmp_path / "iwae"
    assert iwae_recipe.main(["--row", "iwae", "--k", "5", "--epochs", "1", "--tiny", "--out", str(out),
                             "--eval-k", "20"]) == 0
    ev = json.loads((out / "iwae-k5" / "iwae_eval.json").read_text())
    summary = json.loads((out / "iwae-k5" / "summary.json").read_text())
    assert ev["k"] == 20 and ev["n"] == summary["test"]["n"] and len(ev["activity"]) == 50
    # same test binarization (seed 1234) as the trainer's final ELBO; L_20 >= ELBO on average
    assert ev["log_px"] > summary["test"]["elbo"]
    assert "| IWAE k=5 | 1 |" in capsys.readouterr().out


def test_fast_bernoulli_log_weights_equal_the_models(tmp_path):
    from aevb.data import build_datasets
    from aevb.model import build_model

    cfg = iwae_recipe.row_config("iwae", 5, 1, str(tmp_path), tiny=True)
    splits, info = build_datasets(cfg.data, cfg.model.likelihood)
    torch.manual_seed(0)
    model = build_model(cfg.model, info, train_mean=splits.train.mean(0)).eval()
    x = (splits.test[:6] > 0.5).float()
    with torch.no_grad():
        torch.manual_seed(3)
        want = model.log_weights(x, 7)
        torch.manual_seed(3)
        got = iwae_recipe.log_weights_fn(model)(x, 7)
    assert got.shape == (7, 6)
    assert torch.allclose(got, want, rtol=1e-5, atol=1e-4)


def test_iwae_evaluation_writes_partial_results_block_by_block(tmp_path):
    out = tmp_path / "iwae"
    assert iwae_recipe.main(["--row", "vae", "--k", "1", "--epochs", "1", "--tiny", "--out", str(out),
                             "--no-eval"]) == 0
    assert not (out / "vae-k1" / "iwae_eval.json").exists()
    run_dir = str(out / "vae-k1")
    whole = iwae_recipe.evaluate_run(run_dir, k=10, limit=60)
    blocks = iwae_recipe.evaluate_run(run_dir, k=10, limit=60, block=40)  # 40 + 20: the same draws
    assert not whole["complete"] and blocks["n"] == 60 and blocks["test_size"] == 180  # 60 of 180 test digits
    assert blocks["log_px"] == pytest.approx(whole["log_px"], abs=1e-9)
