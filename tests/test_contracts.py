"""One table of every registered likelihood, objective, encoder and prior; the same checks for each.

The tables are checked against the registries, so a new registry entry without a row fails here.
"""

import math

import pytest
import torch

from aevb.config import ModelConfig
from aevb.data import DataInfo
from aevb.inference.objectives import OBJECTIVES
from aevb.models.encoders import ENCODERS
from aevb.models.likelihoods import LIKELIHOODS
from aevb.models.priors import PRIORS
from aevb.models.vae import build_model

B = 16


def binary(shape, g):
    return torch.bernoulli(torch.rand(*shape, generator=g) * 0.8 + 0.1, generator=g)


def unit(shape, g):
    return torch.rand(*shape, generator=g) * 0.9 + 0.05


def real(shape, g):
    return torch.randn(*shape, generator=g) * 2 + 1


def levels(shape, g):
    return torch.randint(0, 256, shape, generator=g).float()


def counts(shape, g):
    x = torch.poisson(torch.rand(*shape, generator=g) * 8, generator=g)
    return x * torch.bernoulli(torch.full(shape, 0.7), generator=g)  # extra zeros


# (likelihood, sigma setting, DataInfo.support, data maker[, other ModelConfig fields])
LIKELIHOOD_CASES = [
    ("bernoulli", "learned_shared", "binary", binary),
    ("continuous_bernoulli", "learned_shared", "unit_interval", unit),
    ("gaussian", "0.2", "unit_interval", unit),
    ("gaussian", "learned_shared", "real", real),
    ("gaussian", "learned_per_dim", "real", real),
    ("gaussian", "predicted", "unit_interval", unit),
    ("laplace", "0.5", "real", real),
    ("laplace", "learned_per_dim", "unit_interval", unit),
    ("laplace", "predicted", "real", real),
    ("categorical", "learned_shared", "8bit", levels),
    ("poisson", "learned_shared", "counts", counts),
    ("poisson", "observed", "counts", counts, {"library_size": "observed"}),
    ("nb", "per_feature", "counts", counts),
    ("nb", "per_example", "counts", counts, {"dispersion": "per_example", "library_size": "observed"}),
    ("nb", "3.0", "counts", counts, {"dispersion": "3.0"}),
    ("zinb", "per_feature", "counts", counts),
    ("zinb", "per_example", "counts", counts, {"dispersion": "per_example"}),
    ("zinb", "shared-observed", "counts", counts, {"dispersion": "shared", "library_size": "observed"}),
    ("discretized_logistic", "learned_shared", "8bit", levels),
    ("discretized_logistic_mixture", "k3", "8bit", levels, {"num_mixtures": 3}),
]
OBJECTIVE_CASES = [("elbo", {"num_samples": 1, "kl": "analytic"}), ("elbo", {"num_samples": 3, "kl": "mc"}),
                   ("iwae", {"num_samples": 5})]


def case_id(case):
    return f"{case[0]}-{case[1]}"


def test_tables_cover_every_registry_entry():
    assert {c[0] for c in LIKELIHOOD_CASES} == set(LIKELIHOODS)
    assert {c[0] for c in OBJECTIVE_CASES} == set(OBJECTIVES)
    assert set(ENCODER_SHAPES) == set(ENCODERS)
    assert set(PRIOR_CASES) == set(PRIORS)
    for name, cls in LIKELIHOODS.items():
        assert cls.supports, name
        assert cls.__doc__ and "p(x|z)" in cls.__doc__, name


def build(case, shape=(4, 3), latent_dim=2, seed=0):
    name, sigma, support, make, *extra = case
    num_dims = math.prod(shape)
    info = DataInfo(name="t", shape=shape, num_dims=num_dims, support=support, binarization="none", levels=256)
    g = torch.Generator().manual_seed(seed)
    x = make((B, num_dims), g)
    torch.manual_seed(seed)
    options = extra[0] if extra else {"sigma": sigma}
    cfg = ModelConfig(likelihood=name, latent_dim=latent_dim, hidden=[16], **options)
    return build_model(cfg, info, train_mean=x.mean(0)), x


@pytest.mark.parametrize("objective", OBJECTIVE_CASES, ids=lambda c: f"{c[0]}-{c[1]['num_samples']}")
@pytest.mark.parametrize("case", LIKELIHOOD_CASES, ids=case_id)
def test_bound_has_one_finite_value_per_example_and_finite_gradients(case, objective):
    model, x = build(case)
    model.likelihood_module.check_data(x)
    name, options = objective
    bound = OBJECTIVES[name](model, x, **options, beta=1.0)
    for term in bound:
        assert term.shape == (B,) and torch.isfinite(term).all()
    bound.value.mean().backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
    assert model.decoder.output_bias.grad is not None  # the decoder is trained through log p(x|z)
    sigma_params = [p for n, p in model.named_parameters() if n.startswith("likelihood_module.")]
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in sigma_params)


@pytest.mark.parametrize("objective", OBJECTIVE_CASES, ids=lambda c: f"{c[0]}-{c[1]['num_samples']}")
@pytest.mark.parametrize("case", LIKELIHOOD_CASES, ids=case_id)
def test_a_few_adam_steps_raise_the_bound(case, objective):
    model, x = build(case)
    name, options = objective
    fn = OBJECTIVES[name]

    def score():
        torch.manual_seed(123)
        with torch.no_grad():
            return float(fn(model, x, **options, beta=1.0).value.mean())

    before = score()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(15):
        opt.zero_grad()
        (-fn(model, x, **options, beta=1.0).value.mean()).backward()
        opt.step()
    after = score()
    assert after > before + 0.1, (before, after)


@pytest.mark.parametrize("case", LIKELIHOOD_CASES, ids=case_id)
def test_model_mean_samples_and_reconstructions_have_the_data_shape(case):
    model, x = build(case)
    assert model.reconstruct(x).shape == x.shape
    assert model.sample(3, torch.Generator().manual_seed(0)).shape == (3, x.shape[1])
    drawn = model.sample(3, torch.Generator().manual_seed(0), mean=False)
    assert drawn.shape == (3, x.shape[1]) and torch.isfinite(drawn).all()
    assert model.likelihood_module.params_per_dim * x.shape[1] == model.decoder(torch.zeros(1, 2)).shape[-1]


@pytest.mark.parametrize("case", LIKELIHOOD_CASES, ids=case_id)
def test_model_state_dict_round_trips_including_learned_scales(case):
    model, x = build(case)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.01)
    clone, _ = build(case, seed=1)
    clone.load_state_dict(model.state_dict())
    torch.manual_seed(0)
    a = model.log_weights(x, 2)
    torch.manual_seed(0)
    torch.testing.assert_close(clone.log_weights(x, 2), a)


# data shapes each encoder must handle; the conv decoder must give back exactly this many params
ENCODER_SHAPES = {"mlp": [(12,), (28, 20)], "conv": [(28, 28), (28, 20), (3, 8, 8), (7, 5)]}


@pytest.mark.parametrize("arch, shape", [(a, s) for a, shapes in ENCODER_SHAPES.items() for s in shapes])
@pytest.mark.parametrize("activation", ["tanh", "relu", "elu", "softplus"])
def test_encoder_gives_a_diagonal_gaussian_and_decoder_mirrors_it(arch, shape, activation):
    num_dims = math.prod(shape)
    info = DataInfo(name="t", shape=shape, num_dims=num_dims, support="unit_interval", binarization="none")
    cfg = ModelConfig(arch=arch, likelihood="gaussian", sigma="predicted", latent_dim=3, hidden=[8],
                      activation=activation)
    torch.manual_seed(0)
    model = build_model(cfg, info)
    x = torch.rand(5, num_dims)
    q_z = model.posterior(x)
    assert q_z.batch_shape == (5,) and q_z.event_shape == (3,)
    assert torch.isfinite(q_z.mean).all() and (q_z.stddev > 0).all()
    z = q_z.rsample((4,))  # (K, B, D): decoders take any leading sample dims
    assert model.decoder(z).shape == (4, 5, 2 * num_dims)
    assert model.likelihood(z).log_prob(x).shape == (4, 5)


def test_conv_encoder_refuses_flat_data_with_a_clear_message():
    info = DataInfo(name="t", shape=(12,), num_dims=12, support="binary", binarization="none")
    with pytest.raises(ValueError, match="arch 'conv' needs image data.*use arch 'mlp'"):
        build_model(ModelConfig(arch="conv", latent_dim=2, hidden=[8]), info)


PRIOR_CASES = {"standard_normal", "mog", "vamp"}  # every registered prior, by name


def build_with_prior(name, latent_dim=4, seed=0):
    """A small Bernoulli VAE with prior ``name`` (3 components where it has components) and data x (B, 12)."""
    info = DataInfo(name="t", shape=(12,), num_dims=12, support="binary", binarization="none")
    g = torch.Generator().manual_seed(seed)
    x = binary((B, 12), g)
    torch.manual_seed(seed)
    cfg = ModelConfig(prior=name, prior_components=3, latent_dim=latent_dim, hidden=[16])
    return build_model(cfg, info, train_mean=x.mean(0), train_data=x), x


@pytest.mark.parametrize("name", sorted(PRIORS))
def test_prior_is_a_distribution_over_z_without_batch_dims(name):
    model, _ = build_with_prior(name)
    p_z = model.prior()
    assert p_z.batch_shape == () and p_z.event_shape == (4,)
    z = p_z.sample((7, 3))
    assert z.shape == (7, 3, 4)
    log_p = p_z.log_prob(z)
    assert log_p.shape == (7, 3) and torch.isfinite(log_p).all()
    if name == "standard_normal":  # closed form: -1/2 |z|^2 - D/2 log(2 pi)
        torch.testing.assert_close(log_p, -0.5 * z.pow(2).sum(-1) - 2 * math.log(2 * math.pi))
    assert PRIORS[name].analytic_kl == (name == "standard_normal")


@pytest.mark.parametrize("objective", [("elbo", {"num_samples": 2, "kl": "mc"}), ("iwae", {"num_samples": 3})],
                         ids=lambda c: c[0])
@pytest.mark.parametrize("name", sorted(PRIORS))
def test_each_prior_trains_its_parameters_and_samples_and_round_trips(name, objective):
    model, x = build_with_prior(name)
    bound = OBJECTIVES[objective[0]](model, x, **objective[1], beta=1.0)
    assert bound.value.shape == (B,) and torch.isfinite(bound.value).all()
    bound.value.mean().backward()
    for n, p in model.prior_module.named_parameters():  # learned priors get gradients
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, n
    drawn = model.sample(5, torch.Generator().manual_seed(0))
    assert drawn.shape == (5, 12) and torch.isfinite(drawn).all()
    torch.testing.assert_close(model.sample(5, torch.Generator().manual_seed(0)), drawn)
    clone, _ = build_with_prior(name, seed=1)
    clone.load_state_dict(model.state_dict())
    z = torch.randn(6, 4)
    torch.testing.assert_close(clone.prior().log_prob(z), model.prior().log_prob(z))


@pytest.mark.parametrize("prior, conditional_prior", [("standard_normal", False), ("mog", False),
                                                      ("standard_normal", True)])
def test_conditional_model_with_each_prior_gives_finite_bounds_gradients_and_samples(prior, conditional_prior):
    info = DataInfo(name="t", shape=(12,), num_dims=12, support="binary", binarization="none")
    g = torch.Generator().manual_seed(0)
    x, y = binary((B, 12), g), torch.randint(0, 3, (B,), generator=g)
    torch.manual_seed(0)
    cfg = ModelConfig(prior=prior, prior_components=3, conditional=True, num_classes=3,
                      conditional_prior=conditional_prior, latent_dim=4, hidden=[16])
    model = build_model(cfg, info, train_mean=x.mean(0), train_data=x)
    for name, options in OBJECTIVE_CASES:
        if options.get("kl") == "analytic" and prior == "mog":
            continue
        bound = OBJECTIVES[name](model.given(y), x, **options, beta=1.0)
        assert bound.value.shape == (B,) and torch.isfinite(bound.value).all()
        model.zero_grad()
        bound.value.mean().backward()
        assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
    drawn = model.sample(6, torch.Generator().manual_seed(0), labels=torch.tensor([0, 1, 2, 0, 1, 2]))
    assert drawn.shape == (6, 12) and torch.isfinite(drawn).all()

# every model family: (id, ModelConfig settings, data shape). The contract tests below run on each;
# a new family (posterior, prior, number of layers) adds a row here.
MODEL_CASES = [
    ("one_layer_mlp", {"latent_dim": 3, "hidden": [16]}, (4, 3)),
    ("one_layer_conv", {"arch": "conv", "latent_dim": 3, "hidden": [8]}, (8, 8)),
    ("two_layer_mlp", {"latent_dims": [4, 2], "hidden": [16], "stochastic_hidden": [8]}, (4, 3)),
    ("three_layer_mlp", {"latent_dims": [5, 3, 2], "hidden": [16], "stochastic_hidden": [8, 8]}, (4, 3)),
    ("two_layer_conv_relu", {"arch": "conv", "latent_dims": [4, 2], "hidden": [8], "stochastic_hidden": [],
                             "activation": "relu"}, (8, 8)),
    ("two_layer_gaussian", {"latent_dims": [3, 2], "hidden": [16], "likelihood": "gaussian", "sigma": "predicted"},
     (4, 3)),
    ("full_covariance", {"latent_dim": 3, "hidden": [16], "posterior": "full_covariance"}, (4, 3)),
    ("planar", {"latent_dim": 3, "hidden": [16], "posterior": "planar", "flow_steps": 2}, (4, 3)),
    ("iaf", {"latent_dim": 3, "hidden": [16], "posterior": "iaf", "flow_steps": 2}, (4, 3)),
    ("mog_prior", {"latent_dim": 3, "hidden": [16], "prior": "mog", "prior_components": 4}, (4, 3)),
    ("vamp_prior", {"latent_dim": 3, "hidden": [16], "prior": "vamp", "prior_components": 4}, (4, 3)),
    ("two_layer_iaf_mog", {"latent_dims": [4, 2], "hidden": [16], "stochastic_hidden": [8], "posterior": "iaf",
                           "flow_steps": 2, "prior": "mog", "prior_components": 3}, (4, 3)),
    ("two_layer_full_covariance", {"latent_dims": [4, 2], "hidden": [16], "stochastic_hidden": [8],
                                   "posterior": "full_covariance"}, (4, 3)),
]


def build_family(settings, shape, seed=0):
    num_dims = math.prod(shape)
    support = "unit_interval" if settings.get("likelihood") == "gaussian" else "binary"
    info = DataInfo(name="t", shape=shape, num_dims=num_dims, support=support, binarization="none")
    g = torch.Generator().manual_seed(seed)
    x = unit((B, num_dims), g) if support == "unit_interval" else binary((B, num_dims), g)
    torch.manual_seed(seed)
    return build_model(ModelConfig(**settings), info, train_mean=x.mean(0)), x


@pytest.mark.parametrize("name, settings, shape", MODEL_CASES, ids=[c[0] for c in MODEL_CASES])
def test_iwae_with_one_sample_equals_the_monte_carlo_elbo_on_the_same_noise(name, settings, shape):
    model, x = build_family(settings, shape)
    eps = torch.randn(1, B, model.noise_dim, generator=torch.Generator().manual_seed(1))
    iwae_1 = OBJECTIVES["iwae"](model, x, num_samples=1, noise=eps)
    elbo_mc = OBJECTIVES["elbo"](model, x, num_samples=1, kl="mc", noise=eps)
    torch.testing.assert_close(iwae_1.value, elbo_mc.value, rtol=1e-6, atol=1e-5)
    assert iwae_1.value.shape == (B,) and torch.isfinite(iwae_1.value).all()


@pytest.mark.parametrize("name, settings, shape", MODEL_CASES, ids=[c[0] for c in MODEL_CASES])
def test_log_weights_are_the_sum_of_the_contracts_log_densities(name, settings, shape):
    model, x = build_family(settings, shape)
    z = model.sample_posterior(x, 3, torch.Generator().manual_seed(2))
    assert [tuple(t.shape) for t in z] == [(3, B, d) for d in model.latent_dims]
    parts = (model.log_likelihood(x, z), model.log_prior(z), model.log_q(z, x))
    assert all(p.shape == (3, B) and torch.isfinite(p).all() for p in parts)
    log_w = model.log_weights(x, 3, torch.Generator().manual_seed(2))  # the same generator state: the same z
    torch.testing.assert_close(log_w, parts[0] + parts[1] - parts[2])
    bound = OBJECTIVES["elbo"](model, x, num_samples=2, kl="analytic", noise=torch.Generator().manual_seed(3))
    bound.value.mean().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())


@pytest.mark.parametrize("name, settings, shape", MODEL_CASES, ids=[c[0] for c in MODEL_CASES])
def test_sampling_encoding_and_reconstruction_go_through_the_contract(name, settings, shape):
    model, x = build_family(settings, shape)
    a = model.sample(4, torch.Generator().manual_seed(0))
    torch.testing.assert_close(model.sample(4, torch.Generator().manual_seed(0)), a)  # the generator decides
    assert a.shape == (4, x.shape[1]) and torch.isfinite(a).all()
    moments = model.posterior_moments(x, num_samples=64, generator=torch.Generator().manual_seed(0))
    assert [tuple(m.shape) for m, _, _ in moments] == [(B, d) for d in model.latent_dims]
    assert all((v > 0).all() for _, v, _ in moments)
    assert model.reconstruct(x).shape == x.shape
    top = torch.zeros(2, model.latent_dims[-1])
    assert model.decode_mean(top).shape == (2, x.shape[1])


@pytest.mark.parametrize("likelihood", ["bernoulli", "gaussian"])
def test_generic_evaluator_gives_the_fast_gaussian_evaluators_numbers(likelihood, monkeypatch):
    from aevb.inference import importance

    settings = {"latent_dim": 3, "hidden": [16], "likelihood": likelihood, "sigma": "0.3"}
    model, x = build_family(settings, (4, 3))
    fast = importance.importance_sample(model, x, k=300, seed=5, progress=False, workers=1, memory_mb=1)
    monkeypatch.setattr(importance, "is_diagonal_gaussian_one_layer", lambda model, x: False)
    generic = importance.importance_sample(model, x, k=300, seed=5, progress=False, workers=1, memory_mb=1)
    for key in ("log_px", "elbo", "recon", "kl", "mu"):
        torch.testing.assert_close(generic[key], fast[key], rtol=1e-5, atol=1e-4, msg=key)


@pytest.mark.parametrize("conditional_prior", [False, True])
def test_conditional_model_given_labels_keeps_the_contract_and_iwae_1_equals_the_mc_elbo(conditional_prior):
    info = DataInfo(name="t", shape=(12,), num_dims=12, support="binary", binarization="none")
    g = torch.Generator().manual_seed(0)
    x, y = binary((B, 12), g), torch.randint(0, 3, (B,), generator=g)
    torch.manual_seed(0)
    cfg = ModelConfig(conditional=True, num_classes=3, conditional_prior=conditional_prior, latent_dim=4, hidden=[16])
    model = build_model(cfg, info, train_mean=x.mean(0)).given(y)
    eps = torch.randn(1, B, model.noise_dim, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(OBJECTIVES["iwae"](model, x, num_samples=1, noise=eps).value,
                               OBJECTIVES["elbo"](model, x, num_samples=1, kl="mc", noise=eps).value)
    z = model.sample_posterior(x, 3, torch.Generator().manual_seed(2))
    torch.testing.assert_close(model.log_weights(x, 3, torch.Generator().manual_seed(2)),
                               model.log_likelihood(x, z) + model.log_prior(z) - model.log_q(z, x))
    assert model.reconstruct(x).shape == x.shape
