"""The model: likelihoods p(x|z), priors p(z), posteriors q(z|x), networks and the VAE."""

from aevb.models import likelihoods as _likelihoods  # noqa: F401,E402  (registers every likelihood family first)
