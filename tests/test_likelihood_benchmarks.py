"""The count-likelihood benchmark's true model: quadrature of log p(x) against Monte Carlo over the
prior, and the recipe's --tiny run end to end."""

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCH))
import count_likelihoods  # noqa: E402


def test_true_log_px_by_quadrature_matches_monte_carlo_over_the_prior():
    m = count_likelihoods.true_model(6, seed=3)
    x = torch.tensor(count_likelihoods.sample_counts(m, 3, seed=4), dtype=torch.float64)
    quad = count_likelihoods.true_log_px(m, x, step=0.05)
    torch.manual_seed(0)
    z = torch.randn(400000, 2, dtype=torch.float64)
    mc = torch.stack([torch.logsumexp(count_likelihoods.true_likelihood(m, z).log_prob(xi), 0) - math.log(len(z))
                      for xi in x])
    torch.testing.assert_close(quad, mc, atol=0.02, rtol=0)


@pytest.mark.slow
def test_count_benchmark_tiny_run_writes_every_row(tmp_path):
    env = {"PYTHONPATH": str(BENCH.parent / "src"), "OMP_NUM_THREADS": "1", "MPLBACKEND": "Agg", "PATH": "/usr/bin:/bin"}
    r = subprocess.run([sys.executable, str(BENCH / "count_likelihoods.py"), "--tiny", "--out", str(tmp_path)],
                       capture_output=True, text=True, env=env, timeout=600)
    assert r.returncode == 0, r.stderr
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert set(summary["rows"]) == {"poisson", "nb", "zinb"} and math.isfinite(summary["true"])
    assert "true model log p(x)" in r.stdout
