"""aevb: variational autoencoders with exact likelihoods, every number in nats.

Public API (explicit re-exports):

- ``AEVB``: scikit-learn-like estimator (``fit``, ``transform``, ``score_samples``, ``sample``).
- Building blocks: ``VAE``, ``build_model``, ``LIKELIHOODS``, ``PRIORS``, ``OBJECTIVES``,
  ``elbo``, ``iwae`` (per-example bounds in nats).
- Runs: ``RunConfig``, ``load_run(run_dir) -> (cfg, model, info)``, ``export_model``; training is
  ``from aevb.training.loop import train`` (``train(cfg) -> run_dir``; ``aevb.training.loop`` stays the module).
"""

__version__ = "0.1.0"

from aevb.config import RunConfig  # noqa: E402
from aevb.inference.objectives import OBJECTIVES, elbo, iwae  # noqa: E402
from aevb.models.likelihoods import LIKELIHOODS  # noqa: E402
from aevb.models.priors import PRIORS  # noqa: E402
from aevb.models.vae import VAE, build_model  # noqa: E402
from aevb.outputs.export import export_model  # noqa: E402
from aevb.training.checkpoint import load_run  # noqa: E402

__all__ = ["__version__", "AEVB", "RunConfig", "LIKELIHOODS", "VAE", "build_model", "OBJECTIVES", "elbo", "iwae",
           "PRIORS", "load_run", "export_model"]


def __getattr__(name: str):
    """``aevb.AEVB`` on first use: the estimator imports scikit-learn (with scipy and pandas, about 1.4 s),
    which a training run from the command line does not need (PEP 562 module attribute)."""
    if name == "AEVB":
        from aevb.api import AEVB

        return AEVB
    raise AttributeError(f"module 'aevb' has no attribute {name!r}")
