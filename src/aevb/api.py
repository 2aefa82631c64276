"""A scikit-learn estimator (``BaseEstimator`` + ``TransformerMixin``) for quick use on arrays:

    >>> from aevb import AEVB
    >>> vae = AEVB(latent_dim=2).fit(X)           # X: (N, D) or (N, H, W)
    >>> z, log_px = vae.transform(X), vae.score_samples(X)

It works in ``Pipeline``, ``cross_val_score`` (``score`` = mean log p(x) in nats, higher is
better), ``GridSearchCV`` and ``clone``, and passes scikit-learn's ``check_estimator`` except the
checks listed in ``tests/test_api_sklearn.py`` with their reasons.

It builds a ``RunConfig`` from its arguments (bad values get the same messages as the CLI), the
model with ``build_model``, and trains with the trainer's own step (``training.step.optimizer_step``
through ``training.loop.build_bound_module``: the hand-derived fast path where it applies). It
keeps nothing on disk unless ``save`` is called (safetensors + JSON, no pickle).
"""

from __future__ import annotations

import json
import math
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from safetensors.numpy import load_file, save_file
from sklearn.base import BaseEstimator, ClassNamePrefixFeaturesOutMixin, TransformerMixin
from sklearn.utils.validation import check_is_fitted

from aevb.config import RunConfig, update, validate
from aevb.data import DataInfo
from aevb.data.advice import data_warnings
from aevb.data.scaling import FeatureScaling, is_integer_levels, resolve_scaling
from aevb.inference.importance import importance_sample
from aevb.models.posteriors import CLOSED_FORM_KL
from aevb.models.vae import build_model
from aevb.training.checkpoint import normal_file_mode
from aevb.training.optim import build_optimizer
from aevb.training.step import draw_batch, optimizer_step

try:  # scikit-learn >= 1.6
    from sklearn.utils.validation import validate_data as _validate_data
except ImportError:  # pragma: no cover - older scikit-learn
    def _validate_data(estimator, X, **kwargs):
        return estimator._validate_data(X, **kwargs)

DISCRETE = ("bernoulli", "categorical")


class AEVB(ClassNamePrefixFeaturesOutMixin, TransformerMixin, BaseEstimator):
    """Variational autoencoder estimator: ``fit``, ``transform``, ``score_samples``, ``sample``, ``save``/``load``.

    Args:
        latent_dim: dimension of z.
        likelihood: name in ``aevb.LIKELIHOODS`` ("bernoulli" binarizes non-binary [0, 1] values afresh
            for every batch; "categorical" models integer levels such as uint8 pixels directly).
        hidden: encoder hidden layer sizes (the decoder mirrors them).
        activation: hidden activation ("tanh", "relu", "elu", "softplus").
        epochs, batch_size, lr, optimizer: the training loop ("adam" or "adagrad").
        objective: "elbo" or "iwae" (training bound); num_samples: its L or K.
        beta: weight of the KL term (1 = the ELBO; other values are not a bound on log p(x)).
        sigma: gaussian/laplace scale: a number (fixed) or "learned_shared", "learned_per_dim", "predicted".
        scaling: how X becomes model values (``aevb.data.scaling``). Default "auto": integer levels
            (pixels 0..255, digits 0..16) are divided by their maximum (kept as levels for
            "categorical"); values already in [0, 1] are kept; other real tables are scaled per
            feature, "standard" for gaussian/laplace and "minmax" into [0, 1] for the others.
            Or "none", "max", "minmax", "standard" explicitly.
        dequantize: integer levels x become (x + u) / L, u ~ U[0, 1) (fresh per batch, one seeded
            draw when scoring), for continuous likelihoods; scores are then lower bounds on log P(x)
            of the integers, comparable with "categorical" and "bernoulli" numbers.
        k: importance samples per example in ``score_samples`` (IWAE bound L_k).
        threads: torch CPU threads while fitting and scoring (default 1, the CLI's default and the
            fastest for these small models on a shared machine; 0 keeps torch's setting).
        device: "cpu" (default), "cuda" or "auto" (cuda when available).
        random_state: seed of initialisation, batching, binarization, dequantization and sampling.
        verbose: print the mean training bound after each epoch.
        prior: p(z): "standard_normal", "mog" (mixture of Gaussians) or "vamp" (VampPrior); the
            learned ones train the ELBO with the Monte Carlo KL (docs/models.md).
        prior_components: K of a learned prior (0: 10 for mog, 500 for vamp).
        posterior: q(z|x): "gaussian" (diagonal), "full_covariance", "planar" or "iaf" (normalizing flows
            with ``flow_steps`` steps; they train the ELBO with the Monte Carlo KL; docs/models.md).
        flow_steps: K, the number of planar or IAF steps.

    Attributes (after ``fit``):
        model_: the trained ``VAE``. config_: the ``RunConfig``. info_: the ``DataInfo``.
        scaling_: the ``FeatureScaling`` applied (``scaling_.mode`` is what "auto" chose).
        levels_: number of integer levels (256 for uint8) or None. input_shape_: shape of one example.
        n_features_in_, feature_names_in_ (DataFrames): scikit-learn's input bookkeeping.
        score_units_: what ``score_samples`` returns, in words. history_: mean bound per epoch (nats).
    """

    def __init__(self, latent_dim: int = 2, likelihood: str = "bernoulli", hidden: Sequence[int] = (500,),
                 activation: str = "tanh", epochs: int = 50, batch_size: int = 100, lr: float = 1e-3,
                 optimizer: str = "adam", objective: str = "elbo", num_samples: int = 1, beta: float = 1.0,
                 sigma: str | float = "learned_shared", scaling: str = "auto", dequantize: bool = False,
                 k: int = 100, threads: int = 1, device: str = "cpu", random_state: int = 0, verbose: bool = False,
                 prior: str = "standard_normal", prior_components: int = 0, posterior: str = "gaussian",
                 flow_steps: int = 4):
        self.latent_dim = latent_dim
        self.likelihood = likelihood
        self.hidden = hidden
        self.activation = activation
        self.epochs = epochs
        self.batch_size = batch_size
        self.lr = lr
        self.optimizer = optimizer
        self.objective = objective
        self.num_samples = num_samples
        self.beta = beta
        self.sigma = sigma
        self.scaling = scaling
        self.dequantize = dequantize
        self.k = k
        self.threads = threads
        self.device = device
        self.random_state = random_state
        self.verbose = verbose
        self.prior = prior
        self.prior_components = prior_components
        self.posterior = posterior
        self.flow_steps = flow_steps

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = False
        tags.transformer_tags.preserves_dtype = ["float32"]  # posterior means are float32 whatever X is
        return tags

    def _more_tags(self) -> dict:  # scikit-learn < 1.6
        return {"preserves_dtype": [np.float32], "allow_nan": False}

    @property
    def _n_features_out(self) -> int:
        return self.latent_dim

    # -- configuration and data ------------------------------------------
    def _config(self) -> RunConfig:
        cfg = RunConfig()
        update(cfg, {"model": {"latent_dim": self.latent_dim, "likelihood": self.likelihood,
                               "hidden": list(self.hidden), "activation": self.activation, "sigma": str(self.sigma),
                               "prior": self.prior, "prior_components": self.prior_components,
                               "posterior": self.posterior, "flow_steps": self.flow_steps},
                     "objective": {"name": self.objective, "num_samples": self.num_samples, "beta": float(self.beta),
                                   "kl": "analytic" if self.prior == "standard_normal"
                                   and self.posterior in CLOSED_FORM_KL else "mc"},
                     "train": {"epochs": self.epochs, "batch_size": self.batch_size, "lr": self.lr,
                               "optimizer": self.optimizer, "seed": self.random_state, "quiet": not self.verbose,
                               "device": self.device, "threads": self.threads},
                     "eval": {"k": self.k}}, source="AEVB(...)")
        return validate(cfg)

    def _check_array(self, X, reset: bool) -> np.ndarray:
        """X as a numeric (N, D) array (images (N, H, W) flattened); NaN/inf refused with their index."""
        shape = None
        if hasattr(X, "ndim") and getattr(X, "ndim", 2) == 3 and not hasattr(X, "columns"):
            X = np.asarray(X)
            shape, X = X.shape[1:], X.reshape(len(X), -1)
        X = _validate_data(self, X, reset=reset, dtype="numeric", ensure_all_finite=False)
        bad = np.argwhere(~np.isfinite(X))
        if len(bad):
            i, j = (int(v) for v in bad[0])
            raise ValueError(f"X[{i}, {j}] is {X[i, j]}; NaN and inf are not data (row {i}, feature {j})")
        if reset:
            self.input_shape_ = tuple(shape) if shape is not None else (X.shape[1],)
        return X

    def _model_values(self, X: np.ndarray) -> np.ndarray:
        """Integer levels (categorical, dequantize) or scaled values, (N, D) float32."""
        if self.likelihood == "categorical" or self.scaling_.mode == "levels":
            levels = int(self.levels_ or 0)
            if not is_integer_levels(X) or X.max() >= levels:
                raise ValueError(f"the model was fit on integer levels 0..{levels - 1}; X holds other values "
                                 f"(range [{X.min():g}, {X.max():g}])")
            return X.astype(np.float32)
        return self.scaling_.apply(X)

    def _describe(self, X: np.ndarray, cfg: RunConfig) -> tuple[DataInfo, np.ndarray]:
        """DataInfo and the (N, D) training values; chooses scaling_ and levels_."""
        name = self.likelihood
        integer = is_integer_levels(X)
        self.levels_ = (256 if X.dtype == np.uint8 else int(X.max()) + 1) if integer else None
        if name == "categorical" and not integer:
            raise ValueError("the categorical likelihood needs integer levels (uint8 pixels 0..255, counts 0..L-1); "
                             f"X ranges over [{X.min():g}, {X.max():g}] with non-integers: choose a continuous likelihood")
        if self.dequantize and (not integer or name in DISCRETE):
            raise ValueError("dequantize=True is for continuous likelihoods (gaussian, laplace, continuous_bernoulli) "
                             f"on integer levels; got likelihood={name!r} and "
                             f"{'integer' if integer else 'non-integer'} X")
        mode = resolve_scaling(self.scaling, X, name, bool(self.dequantize))
        self.scaling_ = FeatureScaling.fit(mode, X, self.levels_)
        if name == "categorical":
            x = X.astype(np.float32)
            support = "8bit" if self.levels_ == 256 else "integer"
        else:
            x = self.scaling_.apply(X) if mode != "levels" else X.astype(np.float32)
            scaled = x if mode != "levels" else (x + 0.5) / float(self.levels_ or 1)
            binary = bool(np.isin(scaled, (0.0, 1.0)).all())
            unit = bool(scaled.min() >= 0 and scaled.max() <= 1)
            support = "binary" if binary else ("unit_interval" if unit else "real")
        if name == "bernoulli" and support not in ("binary", "unit_interval"):
            raise ValueError(f"the bernoulli likelihood needs values in [0, 1]; with scaling={mode!r} X ranges over "
                             f"[{x.min():g}, {x.max():g}]: use scaling='minmax' or a likelihood for real data")
        binarization = "dynamic" if (name == "bernoulli" and support == "unit_interval") else "none"
        if binarization == "dynamic":
            support = "binary"
        shape = self.input_shape_
        info = DataInfo(name="array", shape=shape, num_dims=int(np.prod(shape)), support=support,
                        binarization=binarization, levels=self.levels_, sizes={"train": len(X), "valid": 0, "test": 0},
                        split="all of X", source="AEVB.fit(X)", dequantization="uniform" if mode == "levels" else "none")
        return info, x

    def _score_units(self) -> str:
        if self.likelihood == "categorical":
            return "log-probability of the integer levels (nats per example)"
        if self.likelihood == "bernoulli":
            return ("log-probability of one seeded binarization of the scaled X (nats per example)"
                    if self.info_.binarization == "dynamic" else "log-probability of binary X (nats per example)")
        if self.scaling_.mode == "levels":
            return "lower bound on the log-probability of the integer levels (dequantized; nats per example)"
        return "log-density of X in its own units (scaling's log-Jacobian included; nats per example)"

    def _warn_about(self, info: DataInfo, values: np.ndarray) -> None:
        for message in data_warnings(torch.from_numpy(values), info, self.likelihood, self.latent_dim):
            warnings.warn(message, UserWarning, stacklevel=3)

    # -- estimator API ----------------------------------------------------
    def fit(self, X, y=None) -> "AEVB":
        """Maximise the mean training bound over X for ``epochs`` passes. ``y`` is ignored.

        Returns:
            self.
        """
        cfg = self._config()
        X = self._check_array(X, reset=True)
        info, values = self._describe(X, cfg)
        self._warn_about(info, values)
        device = self._device()
        with _threads(self.threads), torch.random.fork_rng(devices=[]):
            torch.manual_seed(cfg.train.seed)
            x_train = torch.from_numpy(values).to(device)
            start = x_train if self.scaling_.mode != "levels" else (x_train + 0.5) / self.levels_
            model = build_model(cfg.model, info, train_data=start).to(device)
            if info.binarization == "none":
                model.likelihood_module.check_data(start, where="X")
            optimizer = build_optimizer(model.parameters(), cfg.train, device)
            generator = torch.Generator(device=device).manual_seed(cfg.train.seed)
            self._module = None
            self.history_ = [self._epoch(model, optimizer, x_train, generator, cfg, info) for _ in range(cfg.train.epochs)]
            del self._module
        self.config_, self.info_, self.model_ = cfg, info, model.eval()
        self.score_units_ = self._score_units()
        return self

    def _device(self) -> torch.device:
        if self.device == "auto":
            return torch.device("cuda" if torch.cuda.is_available() else "cpu")
        if self.device == "cuda" and not torch.cuda.is_available():
            raise ValueError("device='cuda' but torch sees no CUDA device; use device='cpu' or 'auto'")
        return torch.device(self.device)

    def _epoch(self, model, optimizer, x_train: torch.Tensor, generator: torch.Generator, cfg, info) -> float:
        """One pass of stochastic gradient ascent on the bound; returns its mean in nats per example."""
        from aevb.speed.fastpath import FastElbo
        from aevb.training.loop import build_bound_module

        t, o = cfg.train, cfg.objective
        module = self._module = getattr(self, "_module", None) or build_bound_module(model, cfg)
        step = FastElbo.optimizer_step if isinstance(module, FastElbo) else optimizer_step
        params = [p for p in model.parameters() if p.requires_grad]
        n, batch_size = len(x_train), min(t.batch_size, len(x_train))
        perm = torch.randperm(n, generator=generator, device=x_train.device)
        total = 0.0
        model.train()
        for i in range(0, n, batch_size):
            idx = perm[i:i + batch_size]
            x, eps = draw_batch(x_train, idx, slice(None), info.binarization, o.num_samples, model.noise_dim, generator)
            if self.scaling_.mode == "levels":  # fresh uniform dequantization noise every batch
                x = (x + torch.rand(x.shape, generator=generator, device=x.device)) / self.levels_
            sums, why = step(module, model, optimizer, params, x, eps, o.beta, idx, len(idx), 1, t, n,
                                       lambda flag: flag)
            if sums is None:
                raise RuntimeError(f"training diverged: {why}; lower lr")
            total += float(sums[0])
        if not math.isfinite(total):
            raise RuntimeError("training diverged (the bound became NaN/inf); lower lr")
        if self.verbose:
            print(f"epoch: mean {o.name} bound {total / n:.3f} nats per example", flush=True)
        return total / n

    def _scaled_tensor(self, X, seed: int | None = None) -> torch.Tensor:
        check_is_fitted(self, "model_")
        x = torch.from_numpy(self._model_values(self._check_array(X, reset=False)))
        if self.scaling_.mode == "levels":
            noise = torch.rand(x.shape, generator=torch.Generator().manual_seed(seed)) if seed is not None else 0.5
            x = (x + noise) / self.levels_
        return x.to(next(self.model_.parameters()).device)

    @torch.no_grad()
    def transform(self, X) -> np.ndarray:
        """Posterior means E_q[z|x] of the model values of X (not binarized). Returns (N, latent_dim) float32.

        Closed form where the posterior family has one, else Monte Carlo (``model.posterior_moments``:
        its stated number of draws, seeded with ``random_state``)."""
        x = self._scaled_tensor(X)
        with _threads(self.threads):
            g = torch.Generator(device=x.device).manual_seed(self.random_state)  # Monte Carlo where no closed form
            mu = [self.model_.posterior_moments(x[i:i + 1000], generator=g)[0][0] for i in range(0, len(x), 1000)]
        return torch.cat(mu).cpu().numpy().astype(np.float32)

    @torch.no_grad()
    def score_samples(self, X) -> np.ndarray:
        """log p(x) estimates by the IWAE bound L_k (k = ``self.k``), per example, in nats.

        L_k = log (1/k) sum_j p(x, z_j) / q(z_j|x) <= log p(x) in expectation, rising to log p(x) as k
        grows (Burda et al. 2016, eq. 8). What it is a log-probability of is ``score_units_``: for
        continuous likelihoods the scaling's log-Jacobian -sum_j log scale_j is added, so the number
        is a log-density of X in X's own units (and of the integers, a lower bound, with dequantize).

        Returns:
            (N,) float64 array, nats per example.
        """
        x = self._scaled_tensor(X, seed=self.random_state + 2)
        with _threads(self.threads):
            log_px = importance_sample(self.model_, x, k=self.k, seed=self.random_state + 1,
                                       binarization=self.info_.binarization, progress=False, workers=1)["log_px"]
        if self.likelihood not in DISCRETE:
            log_px = log_px + self.scaling_.log_det_jacobian
        return log_px.numpy()

    def score(self, X, y=None) -> float:
        """Mean of ``score_samples(X)``: nats per example (higher is better)."""
        return float(np.mean(self.score_samples(X)))

    @torch.no_grad()
    def sample(self, n: int = 1, random_state: int | None = None) -> np.ndarray:
        """n draws z ~ p(z) decoded to E[x|z], in the units of X.

        Returns:
            (n, *input_shape_) float32 array.
        """
        check_is_fitted(self, "model_")
        seed = self.random_state if random_state is None else random_state
        generator = torch.Generator(device=next(self.model_.parameters()).device).manual_seed(seed)
        x = self.model_.sample(n, generator=generator).cpu().numpy().astype(np.float64)
        if self.likelihood != "categorical":
            x = self.scaling_.invert(x)
        return x.reshape(n, *self.input_shape_).astype(np.float32)

    # -- save / load (safetensors + JSON, no pickle) ------------------------
    def save(self, path: str | Path) -> Path:
        """Write ``path/model.safetensors`` (weights and scaling) and ``path/estimator.json``. Returns path."""
        check_is_fitted(self, "model_")
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        tensors = {f"model.{k}": v.detach().cpu().contiguous().numpy() for k, v in self.model_.state_dict().items()}
        tensors.update({"scaling.offset": np.asarray(self.scaling_.offset, np.float64),
                        "scaling.scale": np.asarray(self.scaling_.scale, np.float64)})
        save_file(tensors, str(path / "model.safetensors"))
        normal_file_mode(path / "model.safetensors")
        params = {k: (list(v) if isinstance(v, tuple) else v) for k, v in self.get_params().items()}
        meta = {"format": "aevb.AEVB/1", "params": params, "info": self.info_.to_dict(), "levels": self.levels_,
                "scaling_mode": self.scaling_.mode, "input_shape": list(self.input_shape_),
                "n_features_in": self.n_features_in_, "history": self.history_,
                "feature_names_in": [str(c) for c in getattr(self, "feature_names_in_", [])] or None}
        (path / "estimator.json").write_text(json.dumps(meta, indent=1) + "\n")
        return path

    @classmethod
    def load(cls, path: str | Path, device: str | None = None) -> "AEVB":
        """An estimator written by ``save``, ready to transform, score and sample (on ``device`` if given,
        e.g. "cpu" for one saved on a GPU machine; else on its own ``device`` parameter)."""
        path = Path(path)
        try:
            meta = json.loads((path / "estimator.json").read_text())
            arrays = load_file(str(path / "model.safetensors"))
        except (OSError, ValueError) as e:
            raise ValueError(f"{path}: not an AEVB estimator folder written by AEVB.save ({e})") from None
        params = meta["params"]
        params["hidden"] = tuple(params["hidden"])
        if device is not None:
            params["device"] = device
        est = cls(**params)
        est.config_ = est._config()
        est.info_ = DataInfo.from_dict(meta["info"])
        est.levels_, est.input_shape_ = meta["levels"], tuple(meta["input_shape"])
        est.n_features_in_, est.history_ = meta["n_features_in"], meta["history"]
        if meta.get("feature_names_in"):
            est.feature_names_in_ = np.asarray(meta["feature_names_in"], dtype=object)
        est.scaling_ = FeatureScaling(meta["scaling_mode"], arrays["scaling.offset"], arrays["scaling.scale"],
                                      clip=meta["scaling_mode"] == "minmax")
        model = build_model(est.config_.model, est.info_)
        model.load_state_dict({k[len("model."):]: torch.from_numpy(v) for k, v in arrays.items() if k.startswith("model.")})
        est.model_ = model.to(est._device()).eval()
        est.score_units_ = est._score_units()
        return est


class _threads:
    """Run a block with ``torch.set_num_threads(n)`` (n = 0: unchanged), restoring the previous count."""

    def __init__(self, n: int):
        self.n, self.previous = int(n or 0), torch.get_num_threads()

    def __enter__(self):
        if self.n > 0:
            torch.set_num_threads(self.n)

    def __exit__(self, *exc):
        if self.n > 0:
            torch.set_num_threads(self.previous)
