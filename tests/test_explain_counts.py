"""`aevb explain` for count losses: k * loss + constant = -[log p(x|z) - beta KL] checked against
torch.nn.PoissonNLLLoss, scipy's PMFs and the aevb count likelihoods on random tensors."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy import special, stats

from aevb.cli import main
from aevb.explain import explain_loss
from aevb.models.count_likelihoods import NegativeBinomialLikelihood, ZeroInflatedNegativeBinomialLikelihood

B, D = 4, 9


def problem(seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.poisson(torch.rand(B, D, generator=g, dtype=torch.float64) * 5, generator=g)
    m = torch.randn(B, D, generator=g, dtype=torch.float64)  # log rates / log means
    kl = torch.rand(B, generator=g, dtype=torch.float64) * 3
    return x, m, kl


@pytest.mark.parametrize("reduction, w", [("sum", 1.0), ("mean", 1.0), ("mean", 1 / D), ("sum", 0.5)])
def test_poisson_nll_reading_turns_torch_poisson_nll_loss_into_a_negative_beta_elbo(reduction, w):
    x, m, kl = problem()
    r = explain_loss("poisson_nll", reduction, D, w)
    assert r["likelihood"] == "poisson" and r["constant_nats"] is None
    loss = torch.stack([F.poisson_nll_loss(m[i], x[i], log_input=True, full=False, reduction=reduction)
                        for i in range(B)]) + w * kl
    constant = torch.tensor(special.gammaln(x.numpy() + 1).sum(-1))  # sum_d log x_d!
    log_p = torch.tensor(stats.poisson.logpmf(x.numpy(), np.exp(m.numpy())).sum(-1))
    torch.testing.assert_close(r["multiplier"] * loss + constant, -(log_p - r["beta"] * kl))
    assert r["beta"] == pytest.approx((D if reduction == "mean" else 1) * w)
    assert r["is_elbo"] == (r["beta"] == 1.0)


@pytest.mark.parametrize("loss, cls", [("nb_nll", NegativeBinomialLikelihood),
                                       ("zinb_nll", ZeroInflatedNegativeBinomialLikelihood)])
def test_nb_and_zinb_mean_reduced_losses_have_no_constant_and_beta_d_times_w(loss, cls):
    x, m, kl = problem(1)
    lik = cls(D, dispersion="per_example")
    params = torch.cat([m, torch.randn(B, (lik.params_per_dim - 1) * D, dtype=torch.float64)], -1)
    per_entry = -lik(params).log_prob_per_dim(x)  # the loss as scVI writes it, per entry
    user = per_entry.mean(-1) + 0.01 * kl
    r = explain_loss(loss, "mean", D, 0.01)
    assert r["constant_nats"] == 0.0 and r["likelihood"] == loss[:-4]
    torch.testing.assert_close(r["multiplier"] * user, -(lik(params).log_prob(x) - r["beta"] * kl))
    assert r["beta"] == pytest.approx(D * 0.01) and not r["is_elbo"]
    assert any("an exact ELBO needs KL weight w = 1/9" in line for line in r["derivation"])


def test_cli_explains_a_count_loss(capsys):
    assert main(["explain", "--loss", "poisson_nll", "--reduction", "mean", "--dims", "2000"]) == 0
    out = capsys.readouterr().out
    assert "likelihood: poisson" in out and "effective beta (KL weight relative to log p(x|z)): 2000" in out
    assert "sum_d log(x_d!)" in out
