"""The training loop, its step, state, checkpoints, optimizers and distributed set-up."""
