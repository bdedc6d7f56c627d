"""Collectives that also work in one process: with no process group they act on the caller alone."""

from __future__ import annotations

from typing import Any, TypeVar

import torch.distributed as dist

T = TypeVar("T")


def world() -> tuple[int, int]:
    """(rank, world size); (0, 1) without a process group."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def gather_to_root(obj: T) -> list[T] | None:
    """Every rank's ``obj`` on rank 0 (in rank order); None on the other ranks."""
    rank, size = world()
    if size == 1:
        return [obj]
    gathered: list[Any] | None = [None] * size if rank == 0 else None
    dist.gather_object(obj, gathered, dst=0)
    return gathered


def broadcast_from_root(obj: T | None) -> T:
    """Rank 0's ``obj`` on every rank."""
    if world()[1] == 1:
        return obj  # type: ignore[return-value]
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]  # type: ignore[return-value]


def all_min(value: int) -> int:
    """The smallest ``value`` over all ranks: DDP ranks must run the same number of steps."""
    gathered = gather_to_root(value)
    return broadcast_from_root(min(gathered) if gathered is not None else None)
