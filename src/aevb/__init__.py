"""aevb: variational autoencoders with exact likelihoods, every number in nats."""

__version__ = "0.1.0"

from .config import RunConfig  # noqa: E402
from .likelihoods import LIKELIHOODS  # noqa: E402
from .model import VAE, build_model  # noqa: E402
from .objectives import OBJECTIVES, elbo, iwae  # noqa: E402
from .priors import PRIORS  # noqa: E402

__all__ = ["__version__", "RunConfig", "LIKELIHOODS", "VAE", "build_model", "OBJECTIVES", "elbo", "iwae", "PRIORS"]
