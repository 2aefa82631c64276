"""The model: likelihoods p(x|z), priors p(z), posteriors q(z|x), networks and the VAE."""
