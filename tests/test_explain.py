"""`aevb explain` against the formulas of docs/likelihoods.md and against torch log-densities.

For every reading explain reports (multiplier k, scale, constant, beta) the identity
k * loss + constant = -[log p(x|z) - beta * KL] is checked numerically on random tensors, with the
user's loss written as people write it (F.mse_loss / F.binary_cross_entropy / F.l1_loss).
"""

import json
import math

import pytest
import torch
import torch.nn.functional as F
from torch.distributions import Bernoulli, ContinuousBernoulli, Independent, Laplace, Normal, kl_divergence

from aevb.cli import main
from aevb.explain import explain_loss

B = 5
USER_LOSS = {"mse": F.mse_loss, "bce": F.binary_cross_entropy, "l1": F.l1_loss}


def random_problem(loss, dims, seed=0):
    g = torch.Generator().manual_seed(seed)
    m = torch.rand(B, dims, generator=g, dtype=torch.float64) * 0.9 + 0.05  # decoder output (probabilities for bce)
    x = torch.bernoulli(torch.full((B, dims), 0.4, dtype=torch.float64), generator=g) if loss == "bce" \
        else torch.randn(B, dims, generator=g, dtype=torch.float64)
    mu_z, log_var_z = torch.randn(B, 3, generator=g, dtype=torch.float64), torch.randn(B, 3, generator=g, dtype=torch.float64)
    q_z = Independent(Normal(mu_z, torch.exp(0.5 * log_var_z)), 1)
    p_z = Independent(Normal(torch.zeros(3, dtype=torch.float64), torch.ones(3, dtype=torch.float64)), 1)
    return x, m, kl_divergence(q_z, p_z)


def user_loss(loss, reduction, x, m, kl, w):
    """Per-example loss as written in typical VAE code: reduce over one example's dims, add w * KL."""
    recon = torch.stack([USER_LOSS[loss](m[i], x[i], reduction=reduction) for i in range(len(x))])
    return recon + w * kl


def log_p(loss, x, m, scale):
    if loss == "mse":
        return Independent(Normal(m, scale), 1).log_prob(x)
    if loss == "l1":
        return Independent(Laplace(m, scale), 1).log_prob(x)
    return Independent(Bernoulli(probs=m), 1).log_prob(x)


CASES = [(loss, red, dims, w) for loss in ("mse", "bce", "l1") for red in ("sum", "mean")
         for dims in (1, 10, 49, 784) for w in (1.0, 0.5, 3.0, 49.0)]


@pytest.mark.parametrize("loss, reduction, dims, w", CASES)
def test_every_reading_turns_the_loss_into_a_negative_beta_elbo_plus_the_constant(loss, reduction, dims, w):
    r = explain_loss(loss, reduction, dims, w)
    x, m, kl = random_problem(loss, dims)
    value = user_loss(loss, reduction, x, m, kl, w)
    readings = [r] + [v for v in (r["exact_elbo"], r["as_sum"]) if v is not None]
    for reading in readings:
        k, const, beta = reading["multiplier"], reading["constant_nats"], reading["beta"]
        expected = -(log_p(loss, x, m, reading["scale"]) - beta * kl)
        torch.testing.assert_close(k * value + const, expected, rtol=1e-9, atol=1e-7)
        assert reading["is_elbo"] == (beta == 1.0) and reading["is_bound"] == (beta >= 1.0)
    if loss != "bce":
        assert r["exact_elbo"]["beta"] == pytest.approx(1.0) and r["exact_elbo"]["is_elbo"]


@pytest.mark.parametrize("dims", [1, 784])
def test_mse_matches_the_formulas_in_the_docs(dims):
    # reduction sum, w = 1: sigma^2 = 1/2, constant D/2 log(pi), beta = 1
    r = explain_loss("mse", "sum", dims, 1.0)
    assert r["scale"] ** 2 == pytest.approx(0.5)
    assert r["constant_nats"] == pytest.approx(dims / 2 * math.log(math.pi))
    assert (r["beta"], r["is_elbo"], r["likelihood"]) == (1.0, True, "gaussian")
    # loss = c SSE + w KL: sigma^2 = 1/(2c), beta = w; exact ELBO at sigma^2 = w/(2c)
    r = explain_loss("mse", "mean", dims, 0.25)
    assert r["scale"] ** 2 == pytest.approx(dims / 2) and r["beta"] == 0.25 and not r["is_bound"]
    assert r["exact_elbo"]["scale"] ** 2 == pytest.approx(0.25 * dims / 2)
    assert r["exact_elbo"]["multiplier"] == pytest.approx(4.0)
    if dims == 1:  # mean over one dimension is the sum
        assert r["as_sum"] is None
    else:
        assert r["as_sum"]["scale"] ** 2 == pytest.approx(0.5) and r["as_sum"]["beta"] == pytest.approx(0.25 * dims)


def test_mse_mean_on_mnist_is_an_exact_elbo_only_for_a_sigma_of_about_20():
    r = explain_loss("mse", "mean", 784, 1.0)
    assert r["scale"] == pytest.approx(math.sqrt(392)) and r["is_elbo"]
    assert r["constant_nats"] == pytest.approx(392 * math.log(2 * math.pi * 392))
    assert r["as_sum"]["beta"] == pytest.approx(784)


def test_bce_and_l1_match_the_formulas_in_the_docs():
    r = explain_loss("bce", "mean", 784, 1.0)
    assert (r["likelihood"], r["scale"], r["constant_nats"]) == ("bernoulli", None, 0.0)
    assert r["multiplier"] == pytest.approx(784) and r["beta"] == pytest.approx(784)
    assert explain_loss("bce", "sum", 784, 1.0)["is_elbo"]
    r = explain_loss("l1", "sum", 10, 2.0)
    assert (r["likelihood"], r["scale"], r["beta"]) == ("laplace", 1.0, 2.0)
    assert r["constant_nats"] == pytest.approx(10 * math.log(2))
    assert r["exact_elbo"]["scale"] == pytest.approx(2.0)
    assert explain_loss("l1", "mean", 10, 1.0)["scale"] == pytest.approx(10.0)


def test_bce_on_grayscale_targets_misses_the_continuous_bernoulli_log_normaliser():
    dims = 20
    r = explain_loss("bce", "mean", dims, 1.0)
    g = torch.Generator().manual_seed(3)
    x = torch.rand(B, dims, generator=g, dtype=torch.float64)
    lam = torch.rand(B, dims, generator=g, dtype=torch.float64) * 0.8 + 0.1
    lam = torch.where((lam - 0.5).abs() < 1e-3, lam + 0.01, lam)
    value = user_loss("bce", "mean", x, lam, torch.zeros(B, dtype=torch.float64), 1.0)
    log_cb = Independent(ContinuousBernoulli(probs=lam), 1).log_prob(x)
    log_norm = torch.log(2 * torch.atanh(1 - 2 * lam) / (1 - 2 * lam)).sum(-1)  # sum_d log C(lambda_d)
    torch.testing.assert_close(r["multiplier"] * value, -(log_cb - log_norm))
    assert (log_norm >= dims * math.log(2) - 1e-9).all()
    assert "continuous Bernoulli log-normaliser" in r["note"]


def test_zero_kl_weight_is_no_bound_and_has_no_exact_elbo_reading():
    r = explain_loss("mse", "sum", 4, 0.0)
    assert r["beta"] == 0.0 and not r["is_bound"] and r["exact_elbo"] is None


@pytest.mark.parametrize("args, message", [
    (("mse", "sum", 0, 1.0), "dims must be a positive integer"),
    (("mse", "sum", 4, -1.0), "kl weight must be a finite number >= 0"),
    (("huber", "sum", 4, 1.0), "allowed: mse, bce, l1"),
    (("mse", "max", 4, 1.0), "allowed: sum, mean"),
])
def test_bad_arguments_are_refused_clearly(args, message):
    with pytest.raises(ValueError, match=message):
        explain_loss(*args)


def test_cli_prints_the_explanation_and_json(capsys):
    assert main(["explain", "--loss", "mse", "--reduction", "mean", "--dims", "784"]) == 0
    text = capsys.readouterr().out
    assert "likelihood: gaussian, sigma = 19.799" in text
    assert "exact ELBO" in text and "derivation:" in text
    assert main(["explain", "--loss", "bce", "--reduction", "sum", "--dims", "784", "--kl-weight", "0.5", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["beta"] == 0.5 and data["likelihood"] == "bernoulli" and not data["is_bound"]


def test_cli_reports_bad_values_as_an_aevb_error(capsys):
    assert main(["explain", "--loss", "mse", "--reduction", "sum", "--dims", "-3"]) == 2
    assert "aevb explain: error: dims must be a positive integer" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["explain", "--loss", "huber", "--reduction", "sum", "--dims", "3"])


def test_the_example_in_docs_likelihoods_md_is_what_the_command_prints(capsys):
    from pathlib import Path

    doc = (Path(__file__).resolve().parents[1] / "docs" / "likelihoods.md").read_text()
    block = doc.split("    $ aevb explain ", 1)[1].split("\n\n", 1)[0].splitlines()
    argv = block[0].split()
    assert main(["explain", *argv]) == 0
    out = capsys.readouterr().out
    shown = [line.strip() for line in block[1:] if line.strip() != "..."]
    assert shown and all(line in out for line in shown), (shown, out)
