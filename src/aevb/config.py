"""Typed run configuration: defaults <- preset <- config file <- dotted overrides.

Every field has a default and a one-line description (its ``metadata["help"]``), so
``aevb train --help`` and error messages can explain it. ``validate`` checks every field
at once and raises one :class:`ConfigError` naming each bad key, value and the allowed values.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

try:  # Python >= 3.11
    import tomllib
except ModuleNotFoundError:  # pragma: no cover - Python 3.10
    import tomli as tomllib


def _f(default: Any, help: str, choices: tuple | None = None) -> Any:
    """A dataclass field with a default, a one-line description and optional allowed values."""
    meta = {"help": help, "choices": choices}
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: type(default)(default), metadata=meta)
    return field(default=default, metadata=meta)


class ConfigError(ValueError):
    """One or more configuration values are invalid; the message lists every problem."""


@dataclass
class DataConfig:
    name: str = _f("mnist5k", "named data set (see `aevb data list`) or a path to a file/folder")
    data_dir: str = _f("", "folder holding the data set's files (empty: the default place)")
    binarize: str = _f("auto", "binarization of [0,1] pixels (auto: dynamic for a bernoulli likelihood)", ("auto", "dynamic", "static", "none"))
    split_seed: int = _f(0, "seed of the shuffle that splits train/validation/test")
    valid_fraction: float = _f(0.1, "fraction held out for validation when the set has no fixed split")
    test_fraction: float = _f(0.1, "fraction held out for testing when the set has no fixed test split")
    split: str = _f("", "named split protocol where the data set has several (e.g. mnist: standard, iwae)")
    label_column: str = _f("", "CSV: name or index of the label column (empty: one named label/target/class; none: no label)")
    image_size: str = _f("", "image folders only: resize every image to HxW (e.g. 28x28)")
    dequantize: str = _f("none", "continuous likelihoods on 8-bit data", ("none", "uniform"))
    standardize: bool = _f(False, "subtract the training mean and divide by the training std (real data)")
    max_value: float = _f(0.0, "your own files: divide by this value to scale into [0, 1] (0: inferred; uint8 or a maximum of 255 -> 255)")
    key: str = _f("", ".npz only: name of the array to use (empty: the only one, or images/x/data)")
    transpose: bool = _f(False, ".mtx only: the file is features x examples (10x Genomics matrix.mtx): transpose it")
    missing: str = _f("error", "NaN entries (.npy/.npz, empty or NaN CSV fields): error, or mask (unobserved: log p of the observed entries)",
                      ("error", "mask"))
    verify: bool = _f(True, "binarized-mnist: check the .amat files against the published SHA-1s")


@dataclass
class ModelConfig:
    arch: str = _f("mlp", "encoder/decoder network family", ("mlp", "conv"))
    latent_dim: int = _f(20, "number of latent dimensions of z (one stochastic layer)")
    latent_dims: list = _f([], "sizes of L >= 2 stochastic layers z_1..z_L, z_1 next to x (e.g. 100,50); replaces latent_dim")
    hidden: list = _f([500], "hidden layer sizes of the MLP encoder x -> z_1 (the decoder z_1 -> x mirrors them)")
    stochastic_hidden: list = _f([100, 100], "hidden sizes of the MLPs of q(z_l+1|z_l) (p(z_l|z_l+1) mirrors them), L >= 2 only")
    activation: str = _f("tanh", "hidden activation", ("tanh", "relu", "elu", "softplus"))
    likelihood: str = _f("bernoulli", "observation model p(x|z) (see docs/likelihoods.md)")
    sigma: str = _f("learned_shared", "gaussian/laplace scale: a number (fixed) or learned_shared, learned_per_dim, predicted")
    min_sigma: float = _f(1e-3, "lower bound on a learned gaussian/laplace scale")
    dispersion: str = _f("per_feature", "nb/zinb inverse dispersion theta: a number (fixed) or per_feature, shared, per_example")
    library_size: str = _f("none", "count likelihoods: none (mean = exp(decoder)) or observed (mean = sum(x) * softmax(decoder), scVI)",
                           ("none", "observed"))
    num_mixtures: int = _f(5, "components per dimension of the discretized_logistic_mixture likelihood")
    prior: str = _f("standard_normal", "prior p(z): standard_normal, mog (mixture of Gaussians) or vamp (VampPrior); see docs/models.md")
    prior_components: int = _f(0, "K, components of a learned prior (0: 10 for mog, 500 pseudo-inputs for vamp)")
    prior_init: str = _f("data", "vamp: pseudo-inputs start as K training examples (data) or near the training mean (random)", ("data", "random"))
    conditional: bool = _f(False, "conditional VAE: one-hot labels y into encoder and decoder; every number is log p(x|y)")
    conditional_prior: bool = _f(False, "conditional VAE: a learned prior N(mu_y, diag s_y^2) per class instead of model.prior")
    num_classes: int = _f(0, "conditional VAE: number of classes C (0: from the training labels, max + 1)")
    posterior: str = _f("gaussian", "posterior family q(z|x): gaussian, full_covariance, planar, iaf (see docs/models.md)")
    flow_steps: int = _f(4, "planar/iaf posteriors: number of flow steps K")
    flow_hidden: list = _f([100], "iaf posterior: hidden layer sizes of each step's MADE network")
    flow_context_dim: int = _f(20, "iaf posterior: size of the context h the encoder passes to every step (0: none)")
    init_bias_from_data: bool = _f(True, "start the output bias from the training data (categorical: histogram), a learned scale from PCA")


@dataclass
class ObjectiveConfig:
    name: str = _f("elbo", "training bound", ("elbo", "iwae"))
    kl: str = _f("analytic", "KL term of the ELBO: closed form (AEVB eq. 7) or Monte Carlo (eq. 6)", ("analytic", "mc"))
    num_samples: int = _f(1, "samples of z per example (L for the ELBO, K for IWAE)")
    beta: float = _f(1.0, "weight of the KL term; any value but 1 is not an ELBO")
    warmup_steps: int = _f(0, "optimizer steps over which the KL weight rises linearly from 0 to beta")


@dataclass
class TrainConfig:
    epochs: int = _f(100, "passes over the training set")
    batch_size: int = _f(100, "examples per optimizer step (global, across processes)")
    optimizer: str = _f("adam", "optimizer", ("adam", "adagrad"))
    lr: float = _f(1e-3, "learning rate")
    adam_eps: float = _f(1e-8, "Adam epsilon")
    schedule: str = _f("constant", "learning-rate schedule", ("constant", "iwae"))
    weight_decay: float = _f(0.0, "scale of an N(0, I) prior on the parameters, spread over the N training examples (1 = AEVB's prior)")
    grad_clip: float = _f(0.0, "clip the gradient norm to this value (0: no clipping)")
    seed: int = _f(0, "seed for initialisation, batching, binarization and sampling")
    device: str = _f("auto", "device", ("auto", "cpu", "cuda", "mps"))
    threads: int = _f(0, "torch intra-op threads per process (0: OMP_NUM_THREADS if set, else 1; see docs/performance.md)")
    eval_every: int = _f(0, "validate every N optimizer steps (0: after every epoch)")
    checkpoint_every: int = _f(0, "write a checkpoint every N optimizer steps (0: after every epoch)")
    early_stopping: int = _f(0, "stop after N validations without improvement (0: never)")
    max_nan_retries: int = _f(3, "roll back and lower the learning rate this many times on NaN/inf")
    compile: bool = _f(False, "use torch.compile on the model")
    quiet: bool = _f(False, "no progress bars, one line per epoch")
    keep_checkpoints: int = _f(2, "step checkpoints kept on disk (older ones are deleted; best is kept apart)")
    fast_path: bool = _f(True, "use the hand-derived ELBO or IWAE gradient (no autograd) when the model allows it; see docs/performance.md")
    flush_denormal: bool = _f(True, "CPU: flush denormal floats to zero while training (faster, same results to float tolerance)")
    tensorboard: bool = _f(True, "also write TensorBoard event files under run_dir/tensorboard when tensorboard is installed")


@dataclass
class EvalConfig:
    split: str = _f("test", "split to evaluate", ("train", "valid", "test"))
    k: int = _f(5000, "importance samples per example for log p(x) (IWAE bound L_k)")
    seed: int = _f(1234, "seed of the evaluation's sampling and binarization")
    memory_mb: int = _f(512, "memory budget per chunk of (samples x examples) work")


@dataclass
class RunConfig:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    objective: ObjectiveConfig = field(default_factory=ObjectiveConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    out: str = ""

    # -- conversion -------------------------------------------------------
    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "RunConfig":
        cfg = cls()
        update(cfg, d)
        return cfg

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> "RunConfig":
        try:
            d = json.loads(Path(path).read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise ConfigError(f"cannot read config {path}: {e}") from None
        return cls.from_dict(d)


SECTIONS = ("data", "model", "objective", "train", "eval")

# Settings a resumed run may change; everything else must match the run's config.json and checkpoint.
RESUMABLE = frozenset(("train", k) for k in ("epochs", "quiet", "threads", "device", "eval_every", "checkpoint_every",
                                             "early_stopping", "max_nan_retries", "keep_checkpoints", "tensorboard",
                                             "compile", "flush_denormal"))


def config_differences(a: RunConfig, b: RunConfig, skip=RESUMABLE) -> list[tuple[str, Any, Any]]:
    """(section.key, value in a, value in b) for every field that differs, except those in ``skip``."""
    return [(f"{section}.{f.name}", getattr(getattr(a, section), f.name), getattr(getattr(b, section), f.name))
            for section in SECTIONS for f in dataclasses.fields(getattr(a, section))
            if (section, f.name) not in skip
            and getattr(getattr(a, section), f.name) != getattr(getattr(b, section), f.name)]


def _convert(value: Any, like: Any, key: str) -> Any:
    """Convert a value (often a string from the command line) to the type of ``like``."""
    if isinstance(like, bool):
        if isinstance(value, bool):
            return value
        s = str(value).strip().lower()
        if s in ("1", "true", "yes", "on"):
            return True
        if s in ("0", "false", "no", "off"):
            return False
        raise ConfigError(f"{key}: expected true/false, got {value!r}")
    if isinstance(like, int):
        try:
            if isinstance(value, float) and not value.is_integer():
                raise ValueError
            return int(value) if not isinstance(value, str) else int(value.strip())
        except (TypeError, ValueError):
            raise ConfigError(f"{key}: expected an integer, got {value!r}") from None
    if isinstance(like, float):
        try:
            return float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{key}: expected a number, got {value!r}") from None
    if isinstance(like, list):
        if isinstance(value, str):
            parts = [p for p in value.replace(" ", "").split(",") if p]
        elif isinstance(value, (list, tuple)):
            parts = list(value)
        else:
            parts = [value]
        try:
            return [int(p) for p in parts]
        except (TypeError, ValueError):
            raise ConfigError(f"{key}: expected comma-separated integers, got {value!r}") from None
    return str(value)


def update(cfg: RunConfig, d: dict, source: str = "config") -> RunConfig:
    """Set fields from a nested dict ``{"train": {"lr": 0.01}, ...}``; unknown keys are errors."""
    problems = []
    for section, values in d.items():
        if section == "out":
            cfg.out = str(values)
            continue
        if section not in SECTIONS:
            problems.append(f"{source}: unknown section {section!r} (allowed: {', '.join(SECTIONS)}, out)")
            continue
        if not isinstance(values, dict):
            problems.append(f"{source}: section {section!r} must be a table of key = value")
            continue
        sub = getattr(cfg, section)
        names = {f.name for f in fields(sub)}
        for key, value in values.items():
            if key not in names:
                problems.append(f"{source}: unknown key {section}.{key} (allowed: {', '.join(sorted(names))})")
                continue
            try:
                setattr(sub, key, _convert(value, getattr(sub, key), f"{section}.{key}"))
            except ConfigError as e:
                problems.append(str(e))
    if problems:
        raise ConfigError("\n".join(problems))
    return cfg


def apply_overrides(cfg: RunConfig, overrides: list[str]) -> RunConfig:
    """Apply ``section.key=value`` strings (``--set train.lr=1e-3``)."""
    nested: dict = {}
    for item in overrides:
        if "=" not in item or "." not in item.split("=", 1)[0]:
            raise ConfigError(f"--set {item!r}: expected section.key=value, e.g. train.lr=1e-3")
        dotted, value = item.split("=", 1)
        section, key = dotted.strip().split(".", 1)
        nested.setdefault(section, {})[key] = value.strip()
    return update(cfg, nested, source="--set")


def read_config_file(path: str | Path) -> dict:
    """Read a TOML or JSON config file into a nested dict."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"config file {path}: cannot read it as UTF-8 text: {e}") from None
    try:
        if path.suffix == ".json":
            return json.loads(text)
        return tomllib.loads(text)
    except (json.JSONDecodeError, tomllib.TOMLDecodeError) as e:
        raise ConfigError(f"config file {path}: {e}") from None


def validate(cfg: RunConfig) -> RunConfig:
    """Check every field; raise one ConfigError listing all problems."""
    from aevb.models.likelihoods import LIKELIHOODS
    from aevb.models.priors import PRIORS

    problems = []
    for section in SECTIONS:
        sub = getattr(cfg, section)
        for f in fields(sub):
            choices = f.metadata.get("choices")
            value = getattr(sub, f.name)
            if choices and value not in choices:
                problems.append(f"{section}.{f.name} = {value!r}: allowed values are {', '.join(choices)}")
            if isinstance(value, float) and not math.isfinite(value):
                problems.append(f"{section}.{f.name} = {value!r}: must be a finite number")
    m, o, t, e = cfg.model, cfg.objective, cfg.train, cfg.eval
    if m.likelihood not in LIKELIHOODS:
        problems.append(f"model.likelihood = {m.likelihood!r}: allowed values are {', '.join(sorted(LIKELIHOODS))}")
    if m.prior not in PRIORS:
        problems.append(f"model.prior = {m.prior!r}: allowed values are {', '.join(sorted(PRIORS))}")
    elif o.name == "elbo" and o.kl == "analytic" and not PRIORS[m.prior].analytic_kl and not m.conditional_prior:
        problems.append(f"objective.kl = 'analytic': the {m.prior} prior has no closed-form KL(q(z|x) || p(z)); "
                        "use objective.kl = mc (the Monte Carlo KL, AEVB eq. 6)")
    if m.conditional and m.prior == "vamp":
        problems.append("model.prior = 'vamp' with model.conditional = true: the pseudo-inputs carry no labels; "
                        "allowed: standard_normal or mog, or model.conditional_prior = true")
    if m.prior == "vamp" and len(m.latent_dims) >= 2 and m.posterior in ("planar", "iaf"):
        problems.append(f"model.prior = 'vamp' with model.latent_dims and model.posterior = {m.posterior!r}: the "
                        "hierarchical VampPrior follows the mean of q(z_1|u), which a flow has not in closed form; "
                        "allowed posteriors: gaussian, full_covariance")
    if m.conditional and m.arch != "mlp":
        problems.append(f"model.arch = {m.arch!r} with model.conditional = true: the labels join the input of an "
                        "MLP; allowed value is mlp")
    if m.conditional_prior and not m.conditional:
        problems.append("model.conditional_prior = true needs model.conditional = true")
    if m.num_classes < 0:
        problems.append(f"model.num_classes = {m.num_classes!r}: must be >= 0 (0: from the training labels)")
    if m.prior_components < 0:
        problems.append(f"model.prior_components = {m.prior_components!r}: must be >= 0 (0: the prior's default)")
    problems += posterior_problems(cfg)
    positive = [("model.latent_dim", m.latent_dim), ("objective.num_samples", o.num_samples),
                ("train.epochs", t.epochs), ("train.batch_size", t.batch_size), ("eval.k", e.k),
                ("eval.memory_mb", e.memory_mb)]
    problems += [f"{k} = {v!r}: must be a positive integer" for k, v in positive if v < 1]
    if any(h < 1 for h in m.hidden):
        problems.append(f"model.hidden = {m.hidden!r}: every layer size must be a positive integer")
    problems += _validate_layers(m)
    if not t.lr > 0:
        problems.append(f"train.lr = {t.lr!r}: must be > 0")
    if not t.adam_eps > 0:
        problems.append(f"train.adam_eps = {t.adam_eps!r}: must be > 0")
    if o.beta < 0:
        problems.append(f"objective.beta = {o.beta!r}: must be >= 0")
    nonneg = [("train.weight_decay", t.weight_decay), ("train.grad_clip", t.grad_clip),
              ("train.threads", t.threads), ("train.eval_every", t.eval_every),
              ("train.checkpoint_every", t.checkpoint_every), ("train.early_stopping", t.early_stopping),
              ("train.max_nan_retries", t.max_nan_retries), ("objective.warmup_steps", o.warmup_steps),
              ("train.keep_checkpoints", t.keep_checkpoints), ("data.max_value", cfg.data.max_value)]
    problems += [f"{k} = {v!r}: must be >= 0" for k, v in nonneg if v < 0]
    for k, v in (("data.valid_fraction", cfg.data.valid_fraction), ("data.test_fraction", cfg.data.test_fraction)):
        if not 0 <= v < 1:
            problems.append(f"{k} = {v!r}: must be in [0, 1)")
    if m.min_sigma <= 0:
        problems.append(f"model.min_sigma = {m.min_sigma!r}: must be > 0")
    if not _is_sigma(m.sigma):
        problems.append(f"model.sigma = {m.sigma!r}: allowed values are a positive number or "
                        f"{', '.join(SIGMA_MODES)}")
    if not _is_dispersion(m.dispersion):
        problems.append(f"model.dispersion = {m.dispersion!r}: allowed values are a positive number or "
                        "per_feature, shared, per_example")
    if m.num_mixtures < 1:
        problems.append(f"model.num_mixtures = {m.num_mixtures!r}: must be a positive integer")
    if o.name == "iwae" and o.warmup_steps:
        problems.append(f"objective.warmup_steps = {o.warmup_steps!r}: the iwae bound has no KL weight to warm up; "
                        "allowed value is 0 (use objective.name = elbo for KL warm-up)")
    if o.name == "iwae" and o.beta != 1.0:
        problems.append(f"objective.beta = {o.beta!r}: the iwae bound has no KL weight; allowed value is 1.0 "
                        "(use objective.name = elbo for beta != 1)")
    if cfg.data.image_size and not _is_size(cfg.data.image_size):
        problems.append(f"data.image_size = {cfg.data.image_size!r}: allowed values are HxW, e.g. 28x28, or empty")
    if problems:
        raise ConfigError("invalid configuration:\n  " + "\n  ".join(problems))
    return cfg


def posterior_problems(cfg: RunConfig) -> list[str]:
    """What is wrong with the posterior settings, each with the reason and the alternative."""
    from aevb.models.posteriors import CLOSED_FORM_KL, POSTERIORS

    m, o = cfg.model, cfg.objective
    if m.posterior not in POSTERIORS:
        return [f"model.posterior = {m.posterior!r}: allowed values are {', '.join(POSTERIORS)}"]
    problems = []
    flow = m.posterior in ("planar", "iaf")
    if o.name == "elbo" and o.kl == "analytic" and m.posterior not in CLOSED_FORM_KL:
        problems.append(f"objective.kl = 'analytic' with model.posterior = {m.posterior!r}: a flow posterior has no "
                        "closed-form KL; use objective.kl = mc (Monte Carlo KL) or objective.name = iwae")
    if flow and m.flow_steps < 1:
        problems.append(f"model.flow_steps = {m.flow_steps!r}: a {m.posterior} posterior needs at least 1 step "
                        "(or use model.posterior = gaussian)")
    if m.flow_context_dim < 0:
        problems.append(f"model.flow_context_dim = {m.flow_context_dim!r}: must be >= 0")
    if any(h < 1 for h in m.flow_hidden):
        problems.append(f"model.flow_hidden = {m.flow_hidden!r}: every layer size must be a positive integer")
    return problems


def _validate_layers(m: ModelConfig) -> list[str]:
    """The stochastic layers: ``latent_dims`` (L >= 2 sizes) replaces ``latent_dim``, which then
    follows its first entry (resolved here, so the saved config says what was built)."""
    problems = []
    if any(h < 1 for h in m.stochastic_hidden):
        problems.append(f"model.stochastic_hidden = {m.stochastic_hidden!r}: every layer size must be a positive integer")
    if not m.latent_dims:
        return problems
    if len(m.latent_dims) < 2 or any(d < 1 for d in m.latent_dims):
        problems.append(f"model.latent_dims = {m.latent_dims!r}: allowed values are two or more positive sizes "
                        f"(e.g. 100,50), or empty for one layer of model.latent_dim")
    else:
        m.latent_dim = m.latent_dims[0]
    if getattr(m, "conditional", False):
        problems.append(f"model.conditional = true with model.latent_dims = {m.latent_dims!r}: the conditional VAE "
                        "has one stochastic layer; use empty model.latent_dims (and model.latent_dim), or no labels")
    return problems


SIGMA_MODES = ("learned_shared", "learned_per_dim", "predicted")


def _is_sigma(value: str) -> bool:
    """A fixed positive scale written as a number, or one of ``SIGMA_MODES``."""
    if value in SIGMA_MODES:
        return True
    try:
        return math.isfinite(float(value)) and float(value) > 0
    except ValueError:
        return False


def _is_dispersion(value: str) -> bool:
    """A fixed positive theta written as a number, or one of the learned modes."""
    if value in ("per_feature", "shared", "per_example"):
        return True
    try:
        return math.isfinite(float(value)) and float(value) > 0
    except ValueError:
        return False


def _is_size(value: str) -> bool:
    parts = value.lower().split("x")
    return len(parts) == 2 and all(p.isdigit() and int(p) > 0 for p in parts)


def field_help(section: str, name: str) -> str:
    """The one-line description of a config field."""
    sub = getattr(RunConfig(), section)
    for f in fields(sub):
        if f.name == name:
            return f.metadata.get("help", "")
    raise KeyError(f"{section}.{name}")


PRESET_DIR = Path(__file__).parent / "presets"


def list_presets() -> list[str]:
    """Names of the presets shipped in ``aevb/presets/*.toml``."""
    return sorted(p.stem for p in PRESET_DIR.glob("*.toml"))


def preset_description(name: str) -> str:
    """The first comment line of a shipped preset, without the leading ``# NAME:``."""
    for line in (PRESET_DIR / f"{name}.toml").read_text(encoding="utf-8").splitlines():
        if line.startswith("#"):
            text = line.lstrip("# ").strip()
            return text.split(":", 1)[1].strip() if text.startswith(f"{name}:") else text
    return ""


def read_preset(name: str) -> dict:
    """The nested dict of a shipped preset; unknown names are refused with the allowed names."""
    path = PRESET_DIR / f"{name}.toml"
    if not path.is_file():
        raise ConfigError(f"unknown preset {name!r}; allowed: {', '.join(list_presets()) or '(none)'}")
    return read_config_file(path)
