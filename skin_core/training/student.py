"""The classification student's core steps: CE + attention transfer from a frozen teacher, and prediction.

The baseline is the same code with β = 0: no teacher forward, the loss is
exactly the cross-entropy (Zagoruyko & Komodakis, ICLR 2017; the reproduced
paper's "classification student").
"""

from __future__ import annotations

from typing import Iterable

import numpy as np
import pandas as pd
import torch
from torch import nn

from skin_core.classes import CLASSES
from skin_core.config import IMBALANCE_MODES, AugmentConfig
from skin_core.data.augment import augment_batch
from skin_core.data.transforms import normalize, to_input, to_unit
from skin_core.training.steps import autocast, average, backward_step


def freeze(teacher: nn.Module) -> nn.Module:
    """Eval mode and no gradients: the teacher only supplies attention maps."""
    teacher.eval()
    for parameter in teacher.parameters():
        parameter.requires_grad_(False)
    return teacher


def student_step(student: nn.Module, x: torch.Tensor, y: torch.Tensor, objective: nn.Module,
                 optimizer: torch.optim.Optimizer, teacher: nn.Module | None = None,
                 scaler: torch.amp.GradScaler | None = None, amp: bool = False) -> dict[str, float]:
    """One step; returns the loss and its parts (``ce``, ``at`` and the per-layer AT terms)."""
    optimizer.zero_grad(set_to_none=True)
    teacher_maps = None
    if teacher is not None:
        with torch.no_grad(), autocast(x.device, amp):
            teacher_maps = {k: v.float() for k, v in teacher(x).items()}
    with autocast(x.device, amp):
        out = student(x)
    maps = {k: v.float() for k, v in out.items() if k.startswith("layer")}
    loss, parts = objective(out["logits"].float(), y, maps, teacher_maps)  # raises when not finite
    backward_step(loss, optimizer, scaler)
    return parts


def train_epoch(student: nn.Module, batches: Iterable[tuple[torch.Tensor, torch.Tensor]], objective: nn.Module,
                optimizer: torch.optim.Optimizer, device: torch.device, *, teacher: nn.Module | None = None,
                generator: torch.Generator | None = None, amp: bool = False,
                scaler: torch.amp.GradScaler | None = None, augment: AugmentConfig = AugmentConfig()
                ) -> dict[str, float]:
    """One pass over ``(uint8 images, class indices)`` batches, augmented on the fly; averaged step stats.

    The teacher sees the same augmented batch as the student, so their attention maps are of one image.
    """
    student.train()

    def steps() -> Iterable[dict[str, float]]:
        for images, labels in batches:
            x = normalize(augment_batch(to_unit(images, device), augment, generator))
            yield student_step(student, x, labels.to(device), objective, optimizer, teacher, scaler, amp)

    return average(steps())


@torch.no_grad()
def predict_probs(model: nn.Module, images: torch.Tensor | np.ndarray, device: torch.device | str = "cpu",
                  batch_size: int = 64, amp: bool = False) -> np.ndarray:
    """Class probabilities (N×len(CLASSES)) for uint8 N×H×W×3 images, in eval mode."""
    model.eval()
    images = torch.as_tensor(images)
    device = torch.device(device)
    chunks = []
    for start in range(0, len(images), batch_size):
        with autocast(device, amp):
            logits = model(to_input(images[start:start + batch_size], device))["logits"]
        chunks.append(torch.softmax(logits.float(), dim=1).cpu())
    return torch.cat(chunks).numpy() if chunks else np.zeros((0, 0), np.float32)


def class_weights(labels: pd.Series, mode: str) -> tuple[float, ...]:
    """Cross-entropy class weights (mean 1 over present classes); () for ``none``.

    ``weighted_ce``: inverse class frequency, so every class weighs as much as NV
    (best balanced accuracy, at the price of accuracy); ``sqrt_weighted_ce``: the
    square root of that, halfway between (Mahajan et al. 2018 use square-root
    re-weighting of long-tailed labels).
    """
    if mode == "none":
        return ()
    if mode not in IMBALANCE_MODES:
        raise ValueError(f"student.imbalance: unknown mode {mode!r}; use {', '.join(IMBALANCE_MODES)}")
    counts = labels.value_counts().reindex(list(CLASSES), fill_value=0).to_numpy(float)
    weights = np.where(counts > 0, counts.sum() / np.maximum(counts, 1) / len(CLASSES), 0.0)
    weights = np.sqrt(weights) if mode == "sqrt_weighted_ce" else weights
    return tuple(float(w) for w in weights / weights[counts > 0].mean())
