"""Data-parallel training with real processes (torchrun, gloo on 127.0.0.1) equals one process."""

import os
import socket
import subprocess
import sys

import pytest
import torch
from conftest import REPO, run_cli

from aevb.training.checkpoint import find_checkpoint, read_state, read_tensors
from aevb.training.distributed import DistContext

# batch 49 on 1455 digits: shares of 25 + 24 rows, and a last batch of 34 rows (17 + 17)
ARGS = ["--data", "digits", "--hidden", "32", "--latent-dim", "4", "--epochs", "1", "--batch-size", "49",
        "--lr", "3e-3", "--quiet", "--set", "train.checkpoint_every=4", "--set", "train.weight_decay=1.0"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torchrun(*args, nproc=2, env_extra=None):
    env = dict(os.environ, PYTHONPATH=str(REPO / "src"), OMP_NUM_THREADS="1", MPLBACKEND="Agg")
    env.update(env_extra or {})
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes=1", f"--nproc_per_node={nproc}",
           "--master_addr=127.0.0.1", f"--master_port={free_port()}", "-m", "aevb", "train", *map(str, args)]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)


def test_each_rank_takes_a_contiguous_share_of_the_global_batch():
    shares = [DistContext(rank=r, world_size=3).local_rows(10) for r in range(3)]
    assert [(s.start, s.stop) for s in shares] == [(0, 4), (4, 7), (7, 10)]
    assert DistContext().local_rows(10) == slice(0, 10)


@pytest.mark.slow
def test_two_gloo_processes_with_half_batches_equal_one_process_and_resume_across_world_sizes(tmp_path):
    one, two, killed = tmp_path / "one", tmp_path / "two", tmp_path / "killed"
    r = run_cli("train", *ARGS, "--out", one)
    assert r.returncode == 0, r.stderr
    r = torchrun(*ARGS, "--out", two)
    assert r.returncode == 0, r.stderr
    assert "terminate called" not in r.stderr
    assert r.stdout.count("run directory:") == 1  # only rank 0 reports and writes
    a, b = read_tensors(find_checkpoint(one)), read_tensors(find_checkpoint(two))
    assert read_state(find_checkpoint(two))["step"] == 30
    for key in a:
        torch.testing.assert_close(b[key], a[key], rtol=1e-5, atol=1e-6, msg=key)
    sa, sb = read_state(find_checkpoint(one))["sums"], read_state(find_checkpoint(two))["sums"]
    assert sa == [0.0, 0.0, 0.0, 0.0] == sb  # epoch sums were reduced and reset at the epoch end

    # kill both ranks after step 10 (checkpoint at step 8), resume with a single process
    r = torchrun(*ARGS, "--out", killed, env_extra={"AEVB_TEST_KILL_AT_STEP": "10"})
    assert r.returncode != 0
    assert read_state(find_checkpoint(killed))["step"] == 8
    r = run_cli("train", "--resume", killed, "--quiet")
    assert r.returncode == 0, r.stderr
    c = read_tensors(find_checkpoint(killed))
    for key in a:
        torch.testing.assert_close(c[key], a[key], rtol=1e-5, atol=1e-6, msg=key)


@pytest.mark.slow
def test_two_gloo_processes_on_the_fast_path_equal_ddp_with_autograd(tmp_path):
    """The IWAE bound (k=3): the hand-derived gradients averaged by one all-reduce give DDP's weights."""
    args = [*ARGS, "--objective", "iwae", "--samples", "3"]
    fast, ddp = tmp_path / "fast", tmp_path / "ddp"
    r = torchrun(*args, "--out", fast, env_extra={"AEVB_DEBUG": "1"})
    assert r.returncode == 0, r.stderr
    r = torchrun(*args, "--set", "train.fast_path=false", "--out", ddp)
    assert r.returncode == 0, r.stderr
    a, b = read_tensors(find_checkpoint(fast)), read_tensors(find_checkpoint(ddp))
    assert read_state(find_checkpoint(fast))["step"] == 30
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-5, atol=1e-6, msg=key)
