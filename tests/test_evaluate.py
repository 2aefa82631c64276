"""Evaluation against independent computations: a factor-analysis model with a closed-form
log p(x), a straightforward replicate-K-times implementation, hand-computed active units and
bits/dim, and the ordering and reproducibility of the bounds on a trained model."""

import json
import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from conftest import run_cli, tiny_config
from torch import nn
from torch.distributions import Independent, MultivariateNormal, Normal, kl_divergence

from aevb.inference.evaluate import bits_per_dim, count_active_units, encode, evaluate, evaluate_elbo, score_examples
from aevb.models.likelihoods import Likelihood
from aevb.models.priors import StandardNormalPrior
from aevb.models.vae import VAE

# -- a factor-analysis model: x = W z + b + sigma * noise, z ~ N(0, I) -------------------------

class LinearGaussianEncoder(nn.Module):
    """q(z|x) = N(A (x - b), diag(s^2)) with fixed A, s."""

    def __init__(self, A, b, s):
        super().__init__()
        self.A, self.b, self.s = nn.Parameter(A), b, s
        self.latent_dim = A.shape[0]

    def forward(self, x):
        return Independent(Normal((x - self.b) @ self.A.T, self.s.expand(len(x), -1)), 1)


class LinearDecoder(nn.Module):
    def __init__(self, W, b):
        super().__init__()
        self.W, self.b = W, b

    def forward(self, z):
        return z @ self.W.T + self.b


class FixedGaussianLikelihood(Likelihood):
    discrete = False

    def __init__(self, num_dims, sigma):
        super().__init__(num_dims)
        self.sigma = sigma

    def forward(self, params):
        return Independent(Normal(params, self.sigma), 1)


def factor_analysis(num_dims=6, latent_dim=2, sigma=0.5, widen=1.3, seed=0):
    """(model, W, b, sigma): q(z|x) has the exact posterior mean and widened diagonal variances."""
    g = torch.Generator().manual_seed(seed)
    W = torch.randn(num_dims, latent_dim, generator=g)
    b = torch.randn(num_dims, generator=g)
    post_cov = torch.linalg.inv(torch.eye(latent_dim) + W.T @ W / sigma**2)
    A = post_cov @ W.T / sigma**2
    s = widen * post_cov.diagonal().sqrt()
    model = VAE(LinearGaussianEncoder(A, b, s), LinearDecoder(W, b), StandardNormalPrior(latent_dim),
                FixedGaussianLikelihood(num_dims, sigma))
    return model, W, b, sigma


def fa_data(W, b, sigma, n=300, seed=1):
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(n, W.shape[1], generator=g)
    return z @ W.T + b + sigma * torch.randn(n, W.shape[0], generator=g)


def exact_fa_log_px(x, W, b, sigma):
    """log N(x; b, W W^T + sigma^2 I), float64."""
    W, b, x = W.double(), b.double(), x.double()
    cov = W @ W.T + sigma**2 * torch.eye(len(b), dtype=torch.float64)
    return MultivariateNormal(b, covariance_matrix=cov).log_prob(x)


def info_for(num_dims, binarization="none", **extra):
    return SimpleNamespace(name="test", num_dims=num_dims, binarization=binarization, levels=None, **extra)


def test_log_likelihood_estimate_matches_exact_factor_analysis_and_elbo_is_below():
    model, W, b, sigma = factor_analysis()
    x = fa_data(W, b, sigma)
    exact = exact_fa_log_px(x, W, b, sigma)
    result = evaluate(model, x, info_for(6), k=5000, progress=False)
    assert abs(result["log_px"] - float(exact.mean())) < 0.05
    assert result["elbo"] < float(exact.mean()) - 0.05  # the proposal is deliberately too wide
    assert result["elbo"] < result["log_px"]
    assert result["bits_per_dim"] is None  # a density on real data has no bits/dim
    log_px, _ = score_examples(model, x[:20], k=5000, progress=False)
    assert torch.allclose(log_px, exact[:20], atol=0.1)


def test_elbo_matches_the_closed_form_for_factor_analysis():
    """ELBO = -D/2 log(2 pi s^2) - (|x - W m - b|^2 + tr(W S W^T)) / (2 s^2) - KL(q || p)."""
    model, W, b, sigma = factor_analysis()
    x = fa_data(W, b, sigma, n=100)
    q_z = model.posterior(x)
    m, S = q_z.base_dist.loc.detach(), q_z.base_dist.scale.detach() ** 2
    resid = x - m @ W.T - b
    expected_recon = (-0.5 * len(b) * math.log(2 * math.pi * sigma**2)
                      - (resid.square().sum(-1) + (W.square() * S[:, None, :]).sum((-1, -2))) / (2 * sigma**2))
    expected = expected_recon - kl_divergence(q_z, model.prior()).detach()
    result = evaluate_elbo(model, x, num_samples=5000)
    assert result["elbo"] == pytest.approx(float(expected.mean()), abs=0.02)
    assert result["recon"] == pytest.approx(float(expected_recon.mean()), abs=0.02)


def replicate_log_px(model, x, k, seed):
    """The straightforward estimator: each (binarized) example copied K times through the encoder,
    distributions' log_prob everywhere, one logsumexp; same documented random draws."""
    x = torch.bernoulli(x, generator=torch.Generator().manual_seed(seed))
    g = torch.Generator().manual_seed(seed + 1)
    out = []
    with torch.no_grad():
        for xi in x:
            eps = torch.randn(k, model.latent_dim, generator=g)
            x_rep = xi.expand(k, -1)
            q_z = model.posterior(x_rep)
            z = q_z.base_dist.loc + q_z.base_dist.scale * eps
            log_w = model.likelihood(z).log_prob(x_rep) + model.prior().log_prob(z) - q_z.log_prob(z)
            out.append(torch.logsumexp(log_w.double(), 0) - math.log(k))
    return torch.stack(out)


# -- a small trained model --------------------------------------------------------------------

@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    from aevb.data import build_datasets
    from aevb.training.checkpoint import load_run
    from aevb.training.loop import train

    cfg = tiny_config(tmp_path_factory.mktemp("eval"), train={"epochs": 20})
    run_dir = train(cfg)
    cfg, model, info = load_run(run_dir)
    splits, _ = build_datasets(cfg.data, cfg.model.likelihood)
    return run_dir, model, info, splits


def test_fast_estimator_equals_the_replicate_implementation(trained):
    _, model, info, splits = trained
    x = splits.test[:30]
    fast, _ = score_examples(model, x, binarization="dynamic", k=300, seed=7, progress=False)
    slow = replicate_log_px(model, x, 300, seed=7)
    assert torch.allclose(fast, slow, atol=1e-4, rtol=0)


def test_bounds_increase_with_k_on_the_test_set(trained):
    """L_1 <= L_50 <= L_5000 averaged over the test set, up to Monte Carlo error: L_1 and L_50 are
    averaged over 8 seeds and the last step is allowed 3 standard errors of that average."""
    _, model, info, splits = trained
    runs = {k: [evaluate(model, splits.test, info, k=k, seed=s, progress=False)["log_px"] for s in seeds]
            for k, seeds in ((1, range(8)), (50, range(8)), (5000, [0]))}
    l_1, l_50, l_5000 = (float(np.mean(runs[k])) for k in (1, 50, 5000))
    mc_se = float(np.std(runs[50], ddof=1) / math.sqrt(8))
    assert l_1 < l_50 - 0.05  # a real gap: the posterior approximation is not exact
    assert l_50 <= l_5000 + 3 * mc_se + 1e-3
    assert l_1 < l_5000 - 0.05


def test_same_seed_reproduces_exactly_and_another_seed_differs(trained):
    _, model, info, splits = trained
    a = evaluate(model, splits.test, info, k=50, seed=3, progress=False)
    b = evaluate(model, splits.test, info, k=50, seed=3, progress=False)
    c = evaluate(model, splits.test, info, k=50, seed=4, progress=False)
    assert a == b
    assert a["log_px"] != c["log_px"]


def test_small_memory_chunks_give_the_numbers_of_one_chunk(trained):
    _, model, info, splits = trained
    x = splits.test
    one = score_examples(model, x, binarization="dynamic", k=50, memory_mb=512, progress=False)
    many = score_examples(model, x, binarization="dynamic", k=50, memory_mb=1, progress=False)
    for a, b in zip(one, many):
        assert torch.allclose(a, b, atol=1e-5, rtol=0)
    # a memory budget too small for all K samples at once: several streamed sample blocks
    from aevb.inference import evaluate as ev
    small = ev.importance_sample(model, x[:10], k=3000, memory_mb=1, binarization="dynamic", progress=False)
    big = ev.importance_sample(model, x[:10], k=3000, memory_mb=512, binarization="dynamic", progress=False)
    assert ev.choose_chunks(64, 4, 3000, 1)[1] < 3000
    assert torch.allclose(small["log_px"], big["log_px"], atol=1e-5, rtol=0)


def test_evaluation_reports_bits_per_dim_for_discrete_data_and_the_protocol(trained):
    _, model, info, splits = trained
    r = evaluate(model, splits.test, info, k=20, seed=5, progress=False)
    assert r["bits_per_dim"] == pytest.approx(-r["log_px"] / (64 * math.log(2)))
    assert (r["n"], r["k"], r["seed"], r["split"], r["binarization"]) == (len(splits.test), 20, 5, "test", "dynamic")
    assert 0 <= r["active_units"] <= r["latent_dim"] == 4
    assert r["elbo"] == pytest.approx(r["recon"] - r["kl"])


def test_bits_per_dim_for_dequantized_continuous_data_counts_the_levels():
    lik = SimpleNamespace(discrete=False)
    info = SimpleNamespace(num_dims=10, levels=256, dequantization="uniform")
    # p(x) = 256^10 * 2^-40 on [0,1]^10: each 8-bit cell has probability 2^-4 per dim -> 4 bits/dim
    log_px = 10 * math.log(256) - 10 * 4 * math.log(2)
    assert bits_per_dim(log_px, info, lik) == pytest.approx(4.0)
    assert bits_per_dim(-7.0, SimpleNamespace(num_dims=7), SimpleNamespace(discrete=True)) == pytest.approx(1 / math.log(2))
    assert bits_per_dim(1.0, SimpleNamespace(num_dims=7, levels=None), lik) is None


def test_active_units_match_a_hand_computation():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(500, 6, generator=g)
    A = torch.zeros(4, 6)
    A[0, 0], A[1, 1], A[2, 2], A[3, 3] = 2.0, 0.5, 0.2, 0.01  # var(U(0,1)) = 1/12: 0.33, 0.021, 0.0033, 8e-6
    model = VAE(LinearGaussianEncoder(A, torch.zeros(6), torch.ones(4)), LinearDecoder(torch.zeros(6, 4), torch.zeros(6)),
                StandardNormalPrior(4), FixedGaussianLikelihood(6, 1.0))
    mu = (x @ A.T).numpy()
    hand = int((mu.var(axis=0) > 0.01).sum())
    assert hand == 2
    assert evaluate(model, x, info_for(6), k=2, progress=False)["active_units"] == hand
    assert count_active_units(torch.from_numpy(mu)) == hand


def test_encode_returns_posterior_means_and_log_variances(trained):
    _, model, _, splits = trained
    x = splits.test[:25]
    mu, log_var = encode(model, x, batch_size=7)
    q_z = model.posterior(x)
    assert torch.allclose(mu, q_z.base_dist.loc.detach())
    assert torch.allclose(log_var, 2 * q_z.base_dist.scale.detach().log(), atol=1e-6)


# -- the command ------------------------------------------------------------------------------

def test_evaluate_command_prints_a_table_and_saves_json(trained):
    run_dir = trained[0]
    r = run_cli("evaluate", run_dir, "--k", "30", "--seed", "9")
    assert r.returncode == 0, r.stderr
    for word in ("ELBO", "log p(x)", "K=30", "bits/dim", "active units", "/4", "dynamic", "seed 9"):
        assert word in r.stdout, word
    saved = json.loads((run_dir / "eval.json").read_text())
    assert saved == {"test": json.loads((run_dir / "eval-test-k30.json").read_text())}
    _, model, info, splits = trained
    again = evaluate(model, splits.test, info, k=30, seed=9, progress=False)
    assert saved["test"]["log_px"] == pytest.approx(again["log_px"], abs=1e-9)
    r = run_cli("evaluate", run_dir, "--k", "5", "--seed", "9", "--json", "--split", "valid")
    assert r.returncode == 0, r.stderr
    printed = json.loads(r.stdout)
    assert printed["split"] == "valid" and printed["n"] == len(splits.valid)
    # eval.json keeps the latest evaluation of each split: the valid run did not replace the test one
    both = json.loads((run_dir / "eval.json").read_text())
    assert both == {"test": saved["test"], "valid": json.loads((run_dir / "eval-valid-k5.json").read_text())}


def test_an_older_flat_eval_json_is_kept_under_its_split(trained, tmp_path):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(trained[0], run)
    (run / "eval.json").write_text(json.dumps({"split": "train", "n": 3, "log_px": -1.0}))
    r = run_cli("evaluate", run, "--k", "3")
    assert r.returncode == 0, r.stderr
    saved = json.loads((run / "eval.json").read_text())
    assert sorted(saved) == ["test", "train"] and saved["train"]["log_px"] == -1.0 and saved["test"]["k"] == 3


def test_evaluate_score_and_encode_default_to_the_auto_device():
    from aevb.cli import build_parser

    parser = build_parser()
    for command in ("evaluate", "score", "encode"):
        args = parser.parse_args([command, "RUN", "--out", "x.csv"] if command != "evaluate" else [command, "RUN"])
        assert args.device == "auto", command


def test_evaluate_command_explains_missing_run_corrupt_checkpoint_and_bad_split(trained, tmp_path):
    r = run_cli("evaluate", tmp_path / "nope")
    assert r.returncode == 2 and "aevb evaluate: error:" in r.stderr and "does not exist" in r.stderr
    import shutil
    broken = tmp_path / "broken"
    shutil.copytree(trained[0], broken)
    for weights in (broken / "checkpoints").glob("*/weights.safetensors"):
        weights.write_bytes(b"not a safetensors file")
    r = run_cli("evaluate", broken, "--k", "2")
    assert r.returncode == 2 and "weights.safetensors" in r.stderr and "Traceback" not in r.stderr
    r = run_cli("evaluate", trained[0], "--split", "dev")
    assert r.returncode == 2 and "dev" in r.stderr and "test" in r.stderr


def test_sigmoid_rewrite_of_a_tanh_decoder_gives_the_same_outputs(matmul_backend):
    from aevb.inference.evaluate import SigmoidMLP
    from aevb.models.decoders import mlp_decoder

    torch.manual_seed(0)
    decoder = mlp_decoder((8, 8), 64, 1, 5, [40, 30], "tanh")
    z = torch.randn(3, 7, 5)
    fast = SigmoidMLP.from_decoder(decoder)
    assert fast is not None
    with torch.no_grad():
        assert torch.allclose(fast(z), decoder(z), atol=1e-5, rtol=0)
        # log p(x|z) with x . l folded into the last hidden layer, vs torch's Bernoulli on the logits
        x = (torch.rand(3, 64) < 0.3).float()
        expected = torch.distributions.Bernoulli(logits=decoder(z)).log_prob(x[:, None, :]).sum(-1)
        assert torch.allclose(fast.bernoulli_log_likelihood(z, x), expected, atol=1e-4, rtol=0)
    assert SigmoidMLP.from_decoder(mlp_decoder((8, 8), 64, 1, 5, [40], "relu")) is None


def test_parallel_workers_give_the_numbers_of_one_worker(trained):
    _, model, info, splits = trained
    one = evaluate(model, splits.test, info, k=100, workers=1, progress=False)
    two = evaluate(model, splits.test, info, k=100, workers=2, progress=False)
    assert torch.get_num_threads() == 1  # restored
    for key in ("log_px", "elbo", "recon", "kl", "active_units"):
        assert two[key] == pytest.approx(one[key], abs=1e-6), key


def test_values_outside_the_unit_interval_are_refused_for_dynamic_binarization(trained):
    _, model, _, splits = trained
    x = splits.test[:5].clone()
    x[3, 7] = 1.5
    with pytest.raises(ValueError, match="example 3, dimension 7 is 1.5"):
        score_examples(model, x, binarization="dynamic", k=2, progress=False)
