"""A scikit-learn-like estimator for quick use on a NumPy array:

    >>> from aevb import AEVB
    >>> vae = AEVB(latent_dim=2).fit(X)           # X: (N, D) or (N, H, W)
    >>> z, log_px = vae.transform(X), vae.score_samples(X)

It builds a ``RunConfig`` from its arguments (so bad values get the same messages as the CLI),
the model with ``build_model``, the optimizer with ``optim.build_optimizer``, and maximises the
mean of an ``aevb.inference.objectives`` bound in a short loop of its own (``train.fit`` works on a run
directory and its metrics files; an estimator keeps nothing on disk).

Data handling: values that are all >= 0 with a maximum above 1 (8-bit pixels 0..255, the 0..16
scikit-learn digits) are divided by their maximum, as ``scale_``. With the bernoulli likelihood,
non-binary values in [0, 1] are binarized afresh for every batch (dynamic binarization), and
``score_samples`` scores one seeded binarization (the IWAE evaluation protocol).
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Sequence

import numpy as np
import torch

from aevb.config import RunConfig, update, validate
from aevb.data import DataInfo, prepare_batch
from aevb.inference.objectives import OBJECTIVES, iwae
from aevb.models.vae import build_model
from aevb.training.optim import build_optimizer


class AEVB:
    """Variational autoencoder estimator: ``fit``, ``transform``, ``score_samples``, ``sample``.

    Args:
        latent_dim: dimension of z.
        likelihood: name in ``aevb.LIKELIHOODS`` ("bernoulli" binarizes [0, 1] data dynamically).
        hidden: encoder hidden layer sizes (the decoder mirrors them).
        activation: hidden activation ("tanh", "relu", "elu", "softplus").
        epochs: passes over X.
        batch_size: examples per optimizer step.
        lr: learning rate.
        optimizer: "adam" or "adagrad".
        objective: "elbo" or "iwae" (training bound).
        num_samples: samples of z per example in the training bound (L or K).
        k: importance samples per example in ``score_samples`` (IWAE bound L_k; default 100).
        random_state: seed of initialisation, batching, binarization and sampling.
        verbose: print the mean training bound after each epoch.

    Attributes (after ``fit``):
        model_: the trained ``VAE``. config_: the ``RunConfig``. info_: the ``DataInfo``.
        scale_: the divisor applied to X (1.0 when X was not rescaled).
        history_: mean training bound per epoch, in nats per example.
    """

    def __init__(self, latent_dim: int = 2, likelihood: str = "bernoulli", hidden: Sequence[int] = (500,),
                 activation: str = "tanh", epochs: int = 50, batch_size: int = 100, lr: float = 1e-3,
                 optimizer: str = "adam", objective: str = "elbo", num_samples: int = 1, k: int = 100,
                 random_state: int = 0, verbose: bool = False):
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
        self.k = k
        self.random_state = random_state
        self.verbose = verbose

    # -- scikit-learn parameter protocol (``sklearn.base.clone`` works) ----
    def get_params(self, deep: bool = True) -> dict:
        """The constructor arguments by name."""
        names = [p for p in inspect.signature(type(self).__init__).parameters if p != "self"]
        return {name: getattr(self, name) for name in names}

    def set_params(self, **params) -> "AEVB":
        """Set constructor arguments; unknown names are refused with the allowed names."""
        allowed = self.get_params()
        for name, value in params.items():
            if name not in allowed:
                raise ValueError(f"AEVB has no parameter {name!r}; allowed: {', '.join(allowed)}")
            setattr(self, name, value)
        return self

    def __repr__(self) -> str:
        return f"AEVB({', '.join(f'{k}={v!r}' for k, v in self.get_params().items())})"

    # -- configuration and data ------------------------------------------
    def _config(self) -> RunConfig:
        cfg = RunConfig()
        update(cfg, {"model": {"latent_dim": self.latent_dim, "likelihood": self.likelihood,
                               "hidden": list(self.hidden), "activation": self.activation},
                     "objective": {"name": self.objective, "num_samples": self.num_samples},
                     "train": {"epochs": self.epochs, "batch_size": self.batch_size, "lr": self.lr,
                               "optimizer": self.optimizer, "seed": self.random_state, "quiet": not self.verbose},
                     "eval": {"k": self.k}}, source="AEVB(...)")
        return validate(cfg)

    @staticmethod
    def _as_array(X) -> np.ndarray:
        X = np.asarray(X, dtype=np.float32)
        if X.ndim not in (2, 3) or len(X) == 0:
            raise ValueError(f"X must be a non-empty array of shape (N, D) or (N, H, W); got shape {X.shape}")
        bad = np.argwhere(~np.isfinite(X))
        if len(bad):
            index = ", ".join(str(int(i)) for i in bad[0])
            raise ValueError(f"X[{index}] is {X[tuple(bad[0])]}; NaN and inf are not data")
        return X

    def _tensor(self, X) -> torch.Tensor:
        """X scaled by ``scale_`` and flattened to (N, num_dims) float32."""
        self._check_fitted()
        X = self._as_array(X)
        if X.shape[1:] != tuple(self.info_.shape):
            raise ValueError(f"X has examples of shape {X.shape[1:]}, but the model was fit on {tuple(self.info_.shape)}")
        return torch.from_numpy(X.reshape(len(X), -1) / self.scale_)

    def _check_fitted(self) -> None:
        if not hasattr(self, "model_"):
            raise RuntimeError("this AEVB instance is not fitted yet; call fit(X) first")

    def _describe(self, X: np.ndarray) -> DataInfo:
        lo, hi = float(X.min()), float(X.max())
        self.scale_ = hi if (lo >= 0 and hi > 1) else 1.0
        scaled = lo >= 0 and hi / self.scale_ <= 1
        binary = bool(np.isin(X / self.scale_, (0.0, 1.0)).all())
        if self.likelihood == "bernoulli" and not scaled:
            raise ValueError(f"the bernoulli likelihood needs values in [0, 1] (or 0..max >= 0 to scale); X ranges "
                             f"over [{lo:g}, {hi:g}]: choose a likelihood for real data")
        binarization = "dynamic" if (self.likelihood == "bernoulli" and not binary) else "none"
        support = "binary" if (binary or binarization == "dynamic") else ("unit_interval" if scaled else "real")
        shape = tuple(X.shape[1:])
        return DataInfo(name="array", shape=shape, num_dims=int(np.prod(shape)), support=support,
                        binarization=binarization, sizes={"train": len(X), "valid": 0, "test": 0},
                        split="all of X", source="AEVB.fit(X)")

    # -- estimator API ----------------------------------------------------
    def fit(self, X, y=None) -> "AEVB":
        """Maximise the mean training bound over X for ``epochs`` passes. ``y`` is ignored.

        Returns:
            self.
        """
        self.config_ = cfg = self._config()
        X = self._as_array(X)
        self.info_ = info = self._describe(X)
        x_train = torch.from_numpy(X.reshape(len(X), -1) / self.scale_)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(cfg.train.seed)
            generator = torch.Generator().manual_seed(cfg.train.seed)
            model = build_model(cfg.model, info, train_mean=x_train.mean(0), train_data=x_train)
            if info.binarization == "none":
                model.likelihood_module.check_data(x_train, where="X")
            optimizer = build_optimizer(model.parameters(), cfg.train, torch.device("cpu"))
            self.history_ = [self._epoch(model, optimizer, x_train, generator) for _ in range(cfg.train.epochs)]
        self.model_ = model.eval()
        return self

    def _epoch(self, model, optimizer, x_train: torch.Tensor, generator: torch.Generator) -> float:
        """One pass of stochastic gradient ascent on the bound; returns its mean in nats per example."""
        t, o = self.config_.train, self.config_.objective
        objective = OBJECTIVES[o.name]
        n, batch_size = len(x_train), min(t.batch_size, len(x_train))
        perm = torch.randperm(n, generator=generator)
        total = 0.0
        model.train()
        for i in range(0, n, batch_size):
            x = prepare_batch(x_train[perm[i:i + batch_size]], self.info_.binarization, generator)
            bound = objective(model, x, num_samples=o.num_samples).value  # (B,) nats
            loss = -bound.mean()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += float(bound.detach().sum())
        if not math.isfinite(total):
            raise RuntimeError("training diverged (the bound became NaN/inf); lower lr")
        if self.verbose:
            print(f"epoch: mean {o.name} bound {total / n:.3f} nats per example")
        return total / n

    @torch.no_grad()
    def transform(self, X) -> np.ndarray:
        """Posterior means E_q[z|x] of the (scaled, not binarized) X. Returns (N, latent_dim)."""
        x = self._tensor(X)
        return torch.cat([self.model_.posterior(x[i:i + 1000]).mean for i in range(0, len(x), 1000)]).numpy()

    def fit_transform(self, X, y=None) -> np.ndarray:
        return self.fit(X).transform(X)

    @torch.no_grad()
    def score_samples(self, X, batch_size: int = 100) -> np.ndarray:
        """log p(x) estimates by the IWAE bound L_k (k = ``self.k``), per example, in nats.

        L_k = log (1/k) sum_j p(x, z_j) / q(z_j|x) <= log p(x) in expectation, and rises to log p(x)
        as k grows (Burda et al. 2016, eq. 8). The density is that of the scaled data x = X / scale_;
        under dynamic binarization it is the probability of one seeded binarization of X.

        Returns:
            (N,) float64 array, nats per example.
        """
        x = self._tensor(X)
        out = []
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.random_state + 1)
            generator = torch.Generator().manual_seed(self.random_state + 1)
            for i in range(0, len(x), batch_size):
                xb = prepare_batch(x[i:i + batch_size], self.info_.binarization, generator)
                out.append(iwae(self.model_, xb, num_samples=self.k).value.double())
        return torch.cat(out).numpy()

    def score(self, X, y=None) -> float:
        """Mean of ``score_samples(X)``: nats per example (higher is better)."""
        return float(np.mean(self.score_samples(X)))

    @torch.no_grad()
    def sample(self, n: int = 1, random_state: int | None = None) -> np.ndarray:
        """n draws z ~ p(z) decoded to E[x|z], in the units of X (times ``scale_``).

        Returns:
            (n, *shape) float32 array, the shape of one example of X.
        """
        self._check_fitted()
        seed = self.random_state if random_state is None else random_state
        generator = torch.Generator().manual_seed(seed)
        x = self.model_.sample(n, generator=generator) * self.scale_
        return x.reshape(n, *self.info_.shape).numpy()
