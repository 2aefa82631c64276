"""Posterior families against independent computations: autograd Jacobians, change of variables by
hand, scipy's multivariate normal, numerical integration and Monte Carlo KL."""

import math

import numpy as np
import pytest
import scipy.stats
import torch
from torch.autograd.functional import jacobian
from torch.distributions import Independent, MultivariateNormal, Normal, kl_divergence

from aevb.config import ConfigError, ModelConfig, RunConfig, validate
from aevb.data import DataInfo
from aevb.inference.objectives import elbo, iwae
from aevb.models.base import rsample_from_noise
from aevb.models.flows import MADE, InverseAutoregressiveTransform, PlanarTransform, constrain_planar_u
from aevb.models.posteriors import (
    POSTERIORS,
    FullCovariancePosterior,
    InverseAutoregressiveFlowPosterior,
    PlanarFlowPosterior,
    rsample_and_log_prob,
)
from aevb.models.vae import build_model

FAMILIES = list(POSTERIORS)


def standard_normal(d, dtype=torch.float64):
    return Independent(Normal(torch.zeros(d, dtype=dtype), torch.ones(d, dtype=dtype)), 1)


def planar(batch=4, d=3, seed=0, scale=2.0):
    g = torch.Generator().manual_seed(seed)
    u, w = (scale * torch.randn(batch, d, generator=g, dtype=torch.float64) for _ in range(2))
    return PlanarTransform(u, w, torch.randn(batch, generator=g, dtype=torch.float64))


def iaf(batch=4, d=4, context_dim=3, reverse=False, seed=0):
    torch.manual_seed(seed)
    made = MADE(d, [16, 16], context_dim, reverse=reverse, activation="tanh").double()
    with torch.no_grad():  # leave the near-identity initialisation so that the test sees a real map
        made.layers[-1].weight.normal_(0, 0.5)
        made.layers[-1].bias.normal_(0, 1)
    h = torch.randn(batch, context_dim, dtype=torch.float64) if context_dim else None
    return InverseAutoregressiveTransform(made, h, cache_size=0)


def per_example_jacobians(transform, z):
    """(B, D, D) blocks dy_b/dz_b of y = transform(z) for z (B, D); asserts the examples do not mix."""
    full = jacobian(lambda v: transform(v), z)  # (B, D, B, D)
    b = torch.arange(len(z))
    blocks = full[b, :, b, :]
    off = full.clone()
    off[b, :, b, :] = 0
    assert off.abs().max() == 0, "one example's output depends on another example's z"
    return blocks


@pytest.mark.parametrize("make", [planar, lambda: iaf(reverse=False), lambda: iaf(reverse=True),
                                  lambda: iaf(context_dim=0)], ids=["planar", "iaf", "iaf_reversed", "iaf_no_context"])
def test_each_flow_log_det_equals_log_abs_det_of_the_autograd_jacobian(make):
    transform = make()
    z = 1.5 * torch.randn(4, transform.u_hat.shape[-1] if hasattr(transform, "u_hat") else 4, dtype=torch.float64)
    blocks = per_example_jacobians(transform, z)
    expected = torch.linalg.slogdet(blocks).logabsdet
    torch.testing.assert_close(transform.log_abs_det_jacobian(z, transform(z)), expected, rtol=1e-10, atol=1e-10)


def test_planar_flows_keep_w_dot_u_hat_above_minus_one_for_any_raw_parameters():
    g = torch.Generator().manual_seed(1)
    u = 10 * torch.randn(20000, 5, generator=g, dtype=torch.float64)
    w = 10 * torch.randn(20000, 5, generator=g, dtype=torch.float64)
    u[:100] = -w[:100]  # w.u very negative: where the raw parameters would break invertibility
    wu_hat = (w * constrain_planar_u(u, w)).sum(-1)
    assert bool((wu_hat >= -1 - 1e-12).all())  # -1 + softplus(w.u) rounds to -1 itself for w.u < -37
    moderate = (w * u).sum(-1) > -30
    assert bool((wu_hat[moderate] > -1).all())
    torch.testing.assert_close(wu_hat, -1 + torch.nn.functional.softplus((w * u).sum(-1)))


@pytest.mark.parametrize("reverse", [False, True])
def test_iaf_is_autoregressive_its_jacobian_is_triangular_in_the_made_order(reverse):
    transform = iaf(reverse=reverse)
    z = torch.randn(4, 4, dtype=torch.float64)
    blocks = per_example_jacobians(transform, z)
    order = transform.made.order - 1  # dims listed in the order they are generated
    inv = torch.argsort(order)
    permuted = blocks[:, inv][:, :, inv]  # rows and columns in autoregressive order
    assert permuted.triu(1).abs().max() == 0  # y_i depends on no z_j later in the order
    below = torch.ones(4, 4, dtype=torch.bool).tril(-1)
    assert permuted[:, below].abs().min() > 0  # and on every earlier one
    torch.testing.assert_close(torch.diagonal(blocks, dim1=-2, dim2=-1),
                               torch.sigmoid(transform.made(z, transform.context)[1]))


@pytest.mark.parametrize("make", [planar, iaf], ids=["planar", "iaf"])
def test_each_flow_inverse_recovers_z(make):
    transform = make()
    d = 3 if make is planar else 4
    z = 2 * torch.randn(6, 4, d, dtype=torch.float64)  # sample dims first: (K, B, D) against (B, ...) params
    torch.testing.assert_close(transform.inv(transform(z)), z, rtol=1e-9, atol=1e-9)


def test_planar_inverse_carries_the_implicit_function_gradient():
    g = torch.Generator().manual_seed(3)
    u, w = torch.randn(2, 3, generator=g, dtype=torch.float64), torch.randn(2, 3, generator=g, dtype=torch.float64)
    b, y = torch.randn(2, generator=g, dtype=torch.float64), torch.randn(2, 3, generator=g, dtype=torch.float64)
    params = tuple(t.requires_grad_() for t in (u, w, b, y))
    assert torch.autograd.gradcheck(lambda u, w, b, y: PlanarTransform(u, w, b, cache_size=0).inv(y), params)


def flow_family(name, d, seed=0):
    torch.manual_seed(seed)
    family = {"planar": lambda: PlanarFlowPosterior(d, 3),
              "iaf": lambda: InverseAutoregressiveFlowPosterior(d, 2, [16], 3, "tanh")}[name]().double()
    if name == "iaf":
        for made in family.steps:
            with torch.no_grad():
                made.layers[-1].weight.normal_(0, 0.5)
    params = torch.randn(5, family.num_params, dtype=torch.float64)
    return family, params


@pytest.mark.parametrize("name", ["planar", "iaf"])
def test_flow_log_prob_equals_change_of_variables_by_hand(name):
    """log q(z_K) = log N(z_0; mu, sigma^2) - sum_k log|det J_k|, with z_0 found by inverting the steps
    and every det from an autograd Jacobian; z_K is a fresh point (no cached forward pass)."""
    d = 3
    family, params = flow_family(name, d)
    q_z = family(params)
    z0 = torch.randn(5, d, dtype=torch.float64)
    with torch.no_grad():
        zk = z0
        for t in q_z.transforms:
            zk = t(zk)
    by_hand = Normal(params[:, :d], torch.exp(0.5 * params[:, d:2 * d])).log_prob(z0).sum(-1)
    z = z0
    for t in q_z.transforms:
        by_hand = by_hand - torch.linalg.slogdet(per_example_jacobians(t, z)).logabsdet
        z = t(z)
    fresh = family(params)  # a new distribution: log_prob has to invert the flow
    torch.testing.assert_close(fresh.log_prob(zk.clone()), by_hand, rtol=1e-8, atol=1e-8)


@pytest.mark.parametrize("name", ["planar", "iaf"])
def test_flow_density_integrates_to_one_in_two_dimensions(name):
    family, params = flow_family(name, 2, seed=4)
    q_z = family(params[:1])
    grid = torch.linspace(-10, 10, 401, dtype=torch.float64)
    zz = torch.stack(torch.meshgrid(grid, grid, indexing="ij"), -1).reshape(-1, 1, 2)  # (G, 1, 2)
    mass = torch.exp(q_z.log_prob(zz)).sum() * (grid[1] - grid[0]) ** 2
    mass = float(mass.detach())
    assert abs(mass - 1) < 2e-3, mass


def test_full_covariance_log_prob_equals_scipy_multivariate_normal():
    family = FullCovariancePosterior(4).double()
    params = torch.randn(3, family.num_params, dtype=torch.float64)
    q_z = family(params)
    z = torch.randn(3, 4, dtype=torch.float64)
    for b in range(3):
        tril = q_z.scale_tril[b]
        assert (torch.diagonal(tril) > 0).all() and tril.triu(1).abs().max() == 0
        torch.testing.assert_close(torch.diagonal(tril), params[b, 4:8].exp())
        ref = scipy.stats.multivariate_normal(params[b, :4].numpy(), (tril @ tril.T).numpy()).logpdf(z[b].numpy())
        assert q_z.log_prob(z)[b].item() == pytest.approx(ref, rel=1e-10)


def test_full_covariance_analytic_kl_matches_monte_carlo_within_four_standard_errors():
    family = FullCovariancePosterior(3).double()
    torch.manual_seed(0)
    q_z, p_z = family(torch.randn(4, family.num_params, dtype=torch.float64)), standard_normal(3)
    analytic = kl_divergence(q_z, p_z)
    z = q_z.sample((100_000,))
    samples = q_z.log_prob(z) - p_z.log_prob(z)
    mc, se = samples.mean(0), samples.std(0) / math.sqrt(len(z))
    assert ((analytic - mc).abs() < 4 * se).all(), (analytic, mc, se)
    as_mvn = MultivariateNormal(torch.zeros(3, dtype=torch.float64), scale_tril=torch.eye(3, dtype=torch.float64))
    torch.testing.assert_close(analytic, kl_divergence(q_z, as_mvn))  # torch's own MVN-MVN closed form


def test_full_covariance_kl_to_a_non_standard_diagonal_gaussian_matches_torch_mvn_kl():
    family = FullCovariancePosterior(3).double()
    q_z = family(torch.randn(2, family.num_params, dtype=torch.float64))
    loc, scale = torch.randn(3, dtype=torch.float64), torch.rand(3, dtype=torch.float64) + 0.5
    ours = kl_divergence(q_z, Independent(Normal(loc, scale), 1))
    torch.testing.assert_close(ours, kl_divergence(q_z, MultivariateNormal(loc, scale_tril=torch.diag(scale))))


def test_rsample_from_noise_gives_the_full_covariance_moments():
    family = FullCovariancePosterior(3).double()
    q_z = family(torch.randn(1, family.num_params, dtype=torch.float64))
    eps = torch.randn(200_000, 1, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    z = rsample_from_noise(q_z, eps)[:, 0].numpy()
    assert np.abs(z.mean(0) - q_z.loc[0].numpy()).max() < 0.03
    assert np.abs(np.cov(z.T) - q_z.covariance_matrix[0].numpy()).max() < 0.05


def tiny_model(posterior, latent_dim=3, num_dims=12, seed=0):
    torch.manual_seed(seed)
    info = DataInfo(name="t", shape=(num_dims,), num_dims=num_dims, support="binary", binarization="none")
    return build_model(ModelConfig(latent_dim=latent_dim, hidden=[16], posterior=posterior, flow_steps=2,
                                   flow_hidden=[8], flow_context_dim=4), info)


@pytest.mark.parametrize("posterior", FAMILIES)
def test_log_q_of_a_reparameterised_draw_equals_log_prob_of_the_same_z_after_inverting(posterior):
    model = tiny_model(posterior)
    x = torch.bernoulli(torch.full((5, 12), 0.4))
    q_z = model.posterior(x)
    z = rsample_from_noise(q_z, torch.randn(7, 5, 3))
    fresh = model.posterior(x).log_prob(z.detach().clone())
    torch.testing.assert_close(q_z.log_prob(z), fresh, rtol=1e-4, atol=1e-4)
    z2, log_q = rsample_and_log_prob(model.posterior(x), torch.randn(7, 5, 3, generator=torch.Generator().manual_seed(0)))
    torch.testing.assert_close(log_q, model.posterior(x).log_prob(z2.detach().clone()), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("posterior", FAMILIES)
def test_iwae_with_one_sample_equals_the_mc_elbo_on_the_same_noise_for_each_family(posterior):
    model = tiny_model(posterior)
    x = torch.bernoulli(torch.full((7, 12), 0.4))
    torch.manual_seed(5)
    a = iwae(model, x, num_samples=1).value
    torch.manual_seed(5)
    b = elbo(model, x, num_samples=1, kl="mc").value
    torch.testing.assert_close(a, b)


@pytest.mark.parametrize("posterior", ["planar", "iaf"])
def test_flow_posterior_mean_by_monte_carlo_agrees_with_a_second_estimate(posterior):
    model = tiny_model(posterior)
    x = torch.bernoulli(torch.full((4, 12), 0.4))
    (mean, var, how), = model.posterior_moments(x, 4000, torch.Generator().manual_seed(1))
    assert how == "Monte Carlo, 4000 samples"
    with torch.no_grad():
        z = rsample_from_noise(model.posterior(x), torch.randn(40_000, 4, 3, generator=torch.Generator().manual_seed(2)))
    se = z.std(0) / math.sqrt(4000)
    assert ((mean - z.mean(0)).abs() < 5 * se).all()
    torch.testing.assert_close(var, z.var(0), rtol=0.15, atol=1e-3)


@pytest.mark.parametrize("posterior", ["full_covariance", "planar", "iaf"])
def test_the_hand_derived_fast_path_is_not_used_for_other_posterior_families(posterior):
    from aevb.speed.fastpath import fast_path_reason

    cfg = RunConfig()
    cfg.model.posterior, cfg.objective.kl = posterior, "mc"
    assert "the encoder is not a GaussianEncoder" in fast_path_reason(tiny_model(posterior), cfg)
    assert fast_path_reason(tiny_model("gaussian"), cfg) == ""


def test_analytic_kl_with_a_flow_posterior_is_refused_with_the_alternative():
    cfg = RunConfig()
    cfg.model.posterior = "planar"
    with pytest.raises(ConfigError, match="objective.kl = mc"):
        validate(cfg)
    cfg.objective.kl = "mc"
    validate(cfg)
    cfg.model.posterior, cfg.model.flow_steps = "iaf", 0
    with pytest.raises(ConfigError, match="model.flow_steps = 0"):
        validate(cfg)
    cfg.model.posterior = "householder"
    with pytest.raises(ConfigError, match="allowed values are gaussian, full_covariance, planar, iaf"):
        validate(cfg)


# -- each family end to end: train, evaluate, checkpoint, every command ----------------------------

def family_config(tmp_path, posterior):
    from conftest import tiny_config

    return tiny_config(tmp_path, model={"posterior": posterior, "flow_steps": 2, "flow_hidden": [16],
                                        "flow_context_dim": 4},
                       objective={"kl": "analytic" if posterior in ("gaussian", "full_covariance") else "mc"})


@pytest.mark.parametrize("posterior", FAMILIES)
def test_each_family_trains_on_digits_and_l_k_is_above_the_elbo_and_survives_a_checkpoint(tmp_path, posterior):
    import json

    from aevb.data import build_datasets
    from aevb.inference.evaluate import evaluate, evaluate_elbo
    from aevb.training.checkpoint import load_run
    from aevb.training.loop import train
    from aevb.training.metrics import read_metrics

    run_dir = train(family_config(tmp_path, posterior))
    records = read_metrics(run_dir)
    assert records[-1]["valid/elbo"] > records[0]["valid/elbo"]  # it learns
    summary = json.loads((run_dir / "summary.json").read_text())["test"]  # the trained model, in memory
    cfg, model, info = load_run(run_dir)
    splits, _ = build_datasets(cfg.data, cfg.model.likelihood)
    again = evaluate_elbo(model, splits.test, binarization=info.binarization, seed=cfg.eval.seed)
    assert again["elbo"] == pytest.approx(summary["elbo"], abs=1e-4)  # the checkpoint gives the same numbers
    result = evaluate(model, splits.test, info, k=50, seed=cfg.eval.seed, progress=False)
    assert result["log_px"] >= result["elbo"]  # L_50 >= ELBO on average over the test split


@pytest.mark.slow
@pytest.mark.parametrize("posterior", ["full_covariance", "planar", "iaf"])
def test_every_command_works_on_a_run_with_each_posterior_family(tmp_path, posterior, capsys):
    from aevb.cli import main
    from aevb.training.loop import train

    run_dir = str(train(family_config(tmp_path, posterior)))
    commands = [["evaluate", run_dir, "--k", "10"], ["score", run_dir, "--k", "10", "--out", str(tmp_path / "s.csv")],
                ["encode", run_dir, "--out", str(tmp_path / "z.csv")], ["sample", run_dir],
                ["reconstruct", run_dir], ["plot", run_dir], ["report", run_dir],
                ["export", run_dir, "--format", "torchscript"], ["export", run_dir, "--format", "onnx"]]
    for args in commands:
        assert main(args) == 0, (args, capsys.readouterr().err)


@pytest.mark.parametrize("fmt", ["torchscript", pytest.param("onnx", marks=pytest.mark.slow)])
def test_the_exported_posterior_graph_draws_z_and_its_exact_log_q_for_each_family(tmp_path, fmt):
    """posterior.{pt,onnx}: (x, eps) -> (z, log q(z|x)); log q checked against the model's own log_prob
    at the same z (a fresh distribution: the flows are inverted), with another batch size than traced."""
    pytest.importorskip("onnxruntime") if fmt == "onnx" else None
    from aevb.outputs.export import export_model

    info = DataInfo(name="t", shape=(12,), num_dims=12, support="binary", binarization="none")
    g = torch.Generator().manual_seed(0)
    x, eps = torch.bernoulli(torch.full((5, 12), 0.4), generator=g), torch.randn(5, 3, generator=g)
    for posterior in FAMILIES:
        model = tiny_model(posterior).eval()
        manifest = export_model(model, info, tmp_path / posterior, fmt)
        path = tmp_path / posterior / manifest["posterior"]["file"]
        if fmt == "torchscript":
            z, log_q = (t.detach() for t in torch.jit.load(str(path))(x, eps))
        else:
            import onnxruntime

            out = onnxruntime.InferenceSession(str(path)).run(None, {"x": x.numpy(), "eps": eps.numpy()})
            z, log_q = (torch.from_numpy(a) for a in out)
        with torch.no_grad():
            torch.testing.assert_close(log_q, model.posterior(x).log_prob(z), rtol=1e-4, atol=1e-4)
            expected_z, _ = rsample_and_log_prob(model.posterior(x), eps)
        torch.testing.assert_close(z, expected_z, rtol=1e-5, atol=1e-5)
        width = model.encoder.family.num_params if posterior != "gaussian" else 3
        assert all(shape == ["B", width] for shape in manifest["encoder"]["outputs"].values())


@pytest.mark.slow
@pytest.mark.parametrize("posterior", ["full_covariance", "iaf"])
def test_two_gloo_processes_equal_one_process_and_a_killed_run_resumes_exactly_with_each_family(tmp_path, posterior):
    """The trainer's noise reaches the family through the contract: W = 2 ranks see the same z as one."""
    from conftest import run_cli
    from test_distributed import ARGS, torchrun

    from aevb.training.checkpoint import find_checkpoint, read_state, read_tensors

    args = [*ARGS, "--posterior", posterior, "--flow-steps", "2", "--kl", "mc"]
    one, two, killed = tmp_path / "one", tmp_path / "two", tmp_path / "killed"
    assert (r := run_cli("train", *args, "--out", one)).returncode == 0, r.stderr
    assert (r := torchrun(*args, "--out", two)).returncode == 0, r.stderr
    a, b = read_tensors(find_checkpoint(one)), read_tensors(find_checkpoint(two))
    assert any(".family." in key for key in a) == (posterior == "iaf")  # the MADE weights are checkpointed
    for key in a:
        torch.testing.assert_close(b[key], a[key], rtol=1e-5, atol=1e-6, msg=key)
    r = run_cli("train", *args, "--out", killed, env_extra={"AEVB_TEST_KILL_AT_STEP": "10"})
    assert r.returncode != 0 and read_state(find_checkpoint(killed))["step"] == 8
    assert (r := run_cli("train", "--resume", killed, "--quiet")).returncode == 0, r.stderr
    c = read_tensors(find_checkpoint(killed))
    for key in a:
        torch.testing.assert_close(c[key], a[key], rtol=1e-6, atol=1e-7, msg=key)


@pytest.mark.parametrize("posterior", ["full_covariance", "iaf"])
def test_the_python_api_fits_scores_transforms_and_reloads_with_each_family(tmp_path, posterior):
    from sklearn.datasets import load_digits

    from aevb.api import AEVB

    X = load_digits().images[:400]
    vae = AEVB(latent_dim=2, hidden=(32,), epochs=2, lr=3e-3, k=20, posterior=posterior, flow_steps=2).fit(X)
    assert vae.config_.objective.kl == ("analytic" if posterior == "full_covariance" else "mc")
    z, scores = vae.transform(X[:50]), vae.score_samples(X[:50])
    assert z.shape == (50, 2) and np.isfinite(z).all() and np.isfinite(scores).all()
    again = AEVB.load(vae.save(tmp_path / "vae"))
    assert again.posterior == posterior
    np.testing.assert_allclose(again.score_samples(X[:50]), scores, rtol=1e-6)
