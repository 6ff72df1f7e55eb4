"""Everything that depends on the number of processes, in one place.

Under ``torchrun`` the process group comes from the environment; alone, the same code runs
with a world of one. Only rank 0 writes files; reductions and the stop flag go through here.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Iterator, Sequence

import torch
import torch.distributed as dist
from torch.utils.data import DistributedSampler, Sampler


@dataclass(frozen=True)
class DistContext:
    """This process's place in the job."""
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def init_distributed(device_type: str) -> DistContext:
    """Join the process group torchrun describes in the environment (or run alone)."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return DistContext()
    ctx = DistContext(rank=int(os.environ["RANK"]), world_size=world_size, local_rank=int(os.environ.get("LOCAL_RANK", "0")))
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device_type == "cuda" else "gloo")
    return ctx


def shutdown(ctx: DistContext) -> None:
    if ctx.distributed and dist.is_initialized():
        dist.destroy_process_group()


def max_across_ranks(values: Sequence[int], ctx: DistContext, device: torch.device) -> list[int]:
    """Each value's maximum over the ranks, in one all-reduce (a minimum: negate it), so that every
    rank stops or checkpoints at the same step."""
    if not ctx.distributed:
        return list(values)
    t = torch.tensor(list(values), dtype=torch.int64, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return t.tolist()


def sum_across_ranks(values: torch.Tensor, ctx: DistContext) -> torch.Tensor:
    if ctx.distributed:
        dist.all_reduce(values, op=dist.ReduceOp.SUM)
    return values


def broadcast_from_main(value: Any, ctx: DistContext) -> Any:
    """Rank 0's value of a picklable object, on every rank."""
    if not ctx.distributed:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def barrier(ctx: DistContext) -> None:
    if ctx.distributed:
        dist.barrier()


class EpochSampler(Sampler[int]):
    """This process's share of an epoch's indices in an order fixed by (seed, epoch).

    Starting at ``start`` skips what was already trained before a checkpoint without loading
    it, which is what makes a resumed epoch see exactly the batches an uninterrupted one would.
    """

    def __init__(self, length: int, *, shuffle: bool, seed: int, ctx: DistContext):
        self._inner = DistributedSampler(range(length), num_replicas=ctx.world_size, rank=ctx.rank,
                                         shuffle=shuffle, seed=seed, drop_last=False)
        self.start = 0

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        self._inner.set_epoch(epoch)
        self.start = start

    def __iter__(self) -> Iterator[int]:
        return iter(list(self._inner)[self.start:])

    def __len__(self) -> int:
        return len(self._inner) - self.start

    @property
    def epoch_length(self) -> int:
        """Indices per epoch for this process, ignoring ``start``."""
        return len(self._inner)
