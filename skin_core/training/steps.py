"""What every training step shares, teacher or student: mixed precision, the backward step, the epoch's means.

Kept apart from ``skin_core.training.teacher`` so that the student (and serving,
through ``predict_probs``) does not import faiss and k-means to train a classifier.
"""

from __future__ import annotations

import contextlib
from collections import defaultdict
from typing import Iterable

import torch


def autocast(device: torch.device, enabled: bool) -> contextlib.AbstractContextManager:
    """Mixed precision on GPU (bfloat16 where supported); a no-op on CPU."""
    if not enabled or device.type != "cuda":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.autocast("cuda", dtype=dtype)


def average(stats: Iterable[dict[str, float]]) -> dict[str, float]:
    """Mean of each key over the steps of an epoch."""
    sums: dict[str, float] = defaultdict(float)
    n = 0
    for step in stats:
        n += 1
        for key, value in step.items():
            sums[key] += value
    return {key: value / max(n, 1) for key, value in sums.items()}


def backward_step(loss: torch.Tensor, optimizer: torch.optim.Optimizer,
                  scaler: torch.amp.GradScaler | None = None) -> None:
    """Backpropagate and step, through the float16 loss scaler where one is in use."""
    if scaler is None:
        loss.backward()
        optimizer.step()
        return
    scaler.scale(loss).backward()
    scaler.step(optimizer)
    scaler.update()
