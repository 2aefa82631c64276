"""Bounds and estimators: objectives (ELBO, IWAE), importance sampling, evaluation."""
