"""aevb: variational autoencoders with exact likelihoods, every number in nats.

Public API (explicit re-exports):

- ``AEVB``: scikit-learn-like estimator (``fit``, ``transform``, ``score_samples``, ``sample``).
- Building blocks: ``VAE``, ``build_model``, ``LIKELIHOODS``, ``PRIORS``, ``OBJECTIVES``,
  ``elbo``, ``iwae`` (per-example bounds in nats).
- Runs: ``RunConfig``, ``load_run(run_dir) -> (cfg, model, info)``, ``export_model``; training is
  ``from aevb.train import train`` (``train(cfg) -> run_dir``; ``aevb.train`` stays the module).
"""

__version__ = "0.1.0"

from .config import RunConfig  # noqa: E402
from .likelihoods import LIKELIHOODS  # noqa: E402
from .model import VAE, build_model  # noqa: E402
from .objectives import OBJECTIVES, elbo, iwae  # noqa: E402
from .priors import PRIORS  # noqa: E402
from .checkpoint import load_run  # noqa: E402
from .export import export_model  # noqa: E402
from .api import AEVB  # noqa: E402

__all__ = ["__version__", "AEVB", "RunConfig", "LIKELIHOODS", "VAE", "build_model", "OBJECTIVES", "elbo", "iwae",
           "PRIORS", "load_run", "export_model"]
