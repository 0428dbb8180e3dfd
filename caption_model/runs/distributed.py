"""Several processes (GPUs or machines) through torchrun: the environment switches DDP on.

torchrun sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and
``MASTER_PORT``; with ``WORLD_SIZE > 1`` the process group is initialised from
them (NCCL on CUDA, gloo on CPU). Without them everything is a single process
and none of this code does anything.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from etspipe.devices import device_kind
from etspipe.errors import UserError

logger = logging.getLogger(__name__)


@dataclass
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    initialised_here: bool = False

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def setup(kind: str) -> DistInfo:
    """Join the process group described by the torchrun environment (if any)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    rank, local = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    if dist.is_initialized():
        return DistInfo(dist.get_rank(), dist.get_world_size(), local, False)
    backend = "nccl" if kind == "cuda" else "gloo"
    if kind == "cuda":
        if local >= torch.cuda.device_count():
            raise UserError(f"LOCAL_RANK is {local} but this machine has {torch.cuda.device_count()} GPU(s): "
                            "start fewer processes per node, or set train.device=cpu")
        torch.cuda.set_device(local)
    dist.init_process_group(backend=backend, init_method="env://", rank=rank, world_size=world)
    logger.info("distributed: rank %d of %d (%s)", rank, world, backend)
    return DistInfo(rank, world, local, True)


def teardown(info: DistInfo) -> None:
    if info.initialised_here and dist.is_initialized():
        dist.destroy_process_group()


def barrier(info: DistInfo) -> None:
    if info.enabled:
        dist.barrier()


def resolve_device(name: str, info: DistInfo) -> torch.device:
    """`auto` takes CUDA when present; `cuda` without a GPU is the user's mistake."""
    if device_kind(name, "train.device") == "cpu":
        return torch.device("cpu")
    return torch.device("cuda", info.local_rank if info.enabled else torch.cuda.current_device())


def any_rank(info: DistInfo, flag: bool) -> bool:
    """True when `flag` is set on any rank (all ranks must then stop at the same step, or DDP hangs)."""
    if not info.enabled:
        return flag
    t = torch.tensor([int(flag)], device="cuda" if dist.get_backend() == "nccl" else "cpu")
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())
