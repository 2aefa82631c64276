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
