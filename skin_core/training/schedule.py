"""The learning-rate schedule of the students: linear warm-up, then cosine decay to 0, per step.

A function of the global step alone, so a run resumed at any epoch lands on the
same rate (Goyal et al. 2017 for the warm-up; Loshchilov & Hutter, SGDR, 2017,
for the cosine)::

    lr(t) = base · t / W                              for t < W
    lr(t) = base · ½ (1 + cos(π (t − W) / (T − W)))   otherwise

with ``W`` warm-up steps and ``T`` steps in all.
"""

from __future__ import annotations

import math
from typing import Iterable, Iterator, TypeVar

import torch

T = TypeVar("T")


def warmup_cosine(step: int, total: int, warmup: int, base: float) -> float:
    """The rate at ``step`` (0-based) of ``total`` steps with ``warmup`` warm-up steps."""
    if not 0 <= warmup < total:
        raise ValueError(f"need 0 <= warmup < total steps, got warmup={warmup}, total={total}")
    if step < warmup:
        return base * step / warmup
    return base * 0.5 * (1 + math.cos(math.pi * min(step - warmup, total - warmup) / (total - warmup)))


def scheduled(batches: Iterable[T], optimizer: torch.optim.Optimizer, first_step: int, total: int, warmup: int,
              base: float) -> Iterator[T]:
    """``batches`` unchanged, with the optimizer's rate set for each one's step before it is used."""
    for offset, batch in enumerate(batches):
        for group in optimizer.param_groups:
            group["lr"] = warmup_cosine(first_step + offset, total, warmup, base)
        yield batch
