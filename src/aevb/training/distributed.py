"""torch.distributed for the trainer: set up from torchrun's environment, reduce, tear down.

``torchrun --nproc_per_node=N -m aevb train ...`` sets RANK, LOCAL_RANK and WORLD_SIZE; ``setup``
joins the process group (gloo on CPU, NCCL on CUDA). Without those variables everything here is
a no-op for one process. Only rank 0 writes files.
"""

from __future__ import annotations

import gc
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass
class DistContext:
    """Where this process sits: ``rank`` of ``world_size`` processes, and its device."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def local_rows(self, num: int) -> slice:
        """This rank's contiguous share of ``num`` rows (shares differ by at most one row)."""
        base, extra = divmod(num, self.world_size)
        start = self.rank * base + min(self.rank, extra)
        return slice(start, start + base + (1 if self.rank < extra else 0))


def setup(device: torch.device) -> DistContext:
    """Join the process group described by torchrun's environment variables, if any.

    On CUDA each process takes device ``cuda:LOCAL_RANK`` and the NCCL backend; elsewhere gloo.
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return DistContext(device=device)
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if device.type == "cuda":
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    if device.type == "mps":
        raise RuntimeError("distributed training supports cpu (gloo) and cuda (nccl), not mps")
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return DistContext(rank=rank, world_size=world_size, local_rank=local_rank, device=device)


def all_reduce_sum(t: torch.Tensor, ctx: DistContext) -> torch.Tensor:
    """Sum of ``t`` over all ranks (in place; ``t`` itself for one process)."""
    if ctx.enabled:
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def any_rank(flag: bool, ctx: DistContext, device: torch.device) -> bool:
    """True on every rank when ``flag`` is True on at least one rank."""
    if not ctx.enabled:
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=device)
    return bool(all_reduce_sum(t, ctx).item() > 0)


def barrier(ctx: DistContext) -> None:
    if ctx.enabled:
        dist.barrier()


def teardown(ctx: DistContext, *objects) -> None:
    """Leave the process group cleanly.

    The caller drops its references to the DDP module and the optimizer first (pass nothing that
    still holds them); without ``gc.collect()`` and a barrier before ``destroy_process_group`` a
    rank can abort at exit with "terminate called without an active exception".
    """
    del objects
    if not ctx.enabled or not dist.is_initialized():
        return
    gc.collect()
    dist.barrier()
    dist.destroy_process_group()
