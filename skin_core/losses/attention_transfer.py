"""Activation-based attention transfer and the classification student's objective.

Zagoruyko & Komodakis, "Paying More Attention to Attention: Improving the
Performance of Convolutional Neural Networks via Attention Transfer", ICLR 2017.

Attention map of a feature map ``A`` (B×C×H×W), per sample::

    Q = vec( 1/C Σ_c |A_c|^p )          then   Q ← Q / ||Q||_2

The paper sums over channels; the reference code (``at`` in
szagoruyko/attention-transfer) takes the mean of ``A^p``.  Both give the same
map after the L2 normalisation (a constant factor cancels).  ``|·|`` is taken so
an odd ``p`` stays a magnitude as in the paper; for the default ``p = 2`` it
changes nothing.

Objective (the paper's Eq. 2 with its β/2 convention)::

    L = CE(logits, y) + β/2 · Σ_{j ∈ layers} AT_j,
    AT_j = mean over batch and H·W positions of (Q_s^j − Q_t^j)^2

``AT_j`` is exactly the reference code's ``at_loss``:
``(at(x) - at(y)).pow(2).mean()``; β defaults to its 1000.  Some revisions of
the reference ``cifar.py`` add ``β · Σ_j AT_j`` (no 1/2); this module follows the
paper's β/2, as ``StudentConfig.at_beta`` documents.  β = 0 is the plain ResNet
baseline: no teacher, the loss is the cross-entropy alone.
"""

from __future__ import annotations

import logging
import math
from typing import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from skin_core.layers import LAYERS, LayerSet

logger = logging.getLogger(__name__)

Stats = dict[str, float]


def channel_map(features: torch.Tensor, p: int = 2) -> torch.Tensor:
    """B×1×H×W mean over channels of ``|A_c|^p`` (the attention map before flattening)."""
    if features.dim() != 4:
        raise ValueError(f"expected B×C×H×W features, got shape {tuple(features.shape)}")
    return features.abs().pow(p).mean(dim=1, keepdim=True)


def normalise(maps: torch.Tensor) -> torch.Tensor:
    """Flatten B×1×H×W maps to B×(H·W) rows of unit L2 norm."""
    return F.normalize(maps.flatten(1), dim=1)


def attention_map(features: torch.Tensor, p: int = 2) -> torch.Tensor:
    """``Q`` of the module docstring: B×(H·W), unit L2 norm per sample."""
    return normalise(channel_map(features, p))


def resize_map(maps: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Resize B×1×h×w channel-mean maps to ``size``: area average when shrinking, else bilinear.

    Done before normalising so both maps are unit vectors over the same grid.
    Shrinking (both sides) averages each target cell's area (adaptive average
    pooling), so no position is skipped; growing, or a mix, is bilinear.
    """
    h, w = maps.shape[-2:]
    if (h, w) == tuple(size):
        return maps
    if h >= size[0] and w >= size[1]:
        return F.adaptive_avg_pool2d(maps, size)
    return F.interpolate(maps, size=size, mode="bilinear", align_corners=False)


def at_term(student: torch.Tensor, teacher: torch.Tensor, p: int = 2) -> torch.Tensor:
    """One layer's ``AT_j``; the teacher is detached and resized to the student's H×W.

    Channel counts may differ (the maps are channel-free); a different spatial
    size (other architecture or input size) resizes the teacher's map, so the
    student's own map, which receives the gradient, is never resampled.
    """
    if student.shape[0] != teacher.shape[0]:
        raise ValueError(f"batch sizes differ: student {student.shape[0]}, teacher {teacher.shape[0]}")
    q_s = attention_map(student, p)
    q_t = normalise(resize_map(channel_map(teacher.detach(), p), tuple(student.shape[-2:])))
    return (q_s - q_t).pow(2).mean()


def check_layers(layers: Sequence[str]) -> tuple[str, ...]:
    """The layers as a tuple; ValueError when empty, unknown or repeated (``LayerSet``'s rules)."""
    layers = tuple(layers)
    try:
        valid = bool(layers) and len(LayerSet.parse("+".join(layers)).layers) == len(layers)
    except ValueError:
        valid = False
    if not valid:
        raise ValueError(f"attention-transfer layers must be a non-empty subset of {', '.join(LAYERS)} "
                         f"without repeats, got {list(layers)}")
    return layers


class AttentionTransferLoss(nn.Module):
    """``β/2 · Σ_j AT_j`` over the chosen layers (see the module docstring).

    ``forward(student_feats, teacher_feats)`` takes the backbones' output dicts
    (keys ``layer1``..``layer4``; extra keys are ignored) and returns
    ``(loss, {"at_layerN": AT_j unscaled, ...})``.  No gradient reaches the teacher.
    """

    def __init__(self, layers: Sequence[str], beta: float = 1000.0, p: int = 2) -> None:
        super().__init__()
        self.layers = check_layers(layers)
        if not beta >= 0 or p < 1:
            raise ValueError(f"need beta >= 0 and p >= 1, got beta={beta}, p={p}")
        self.beta = float(beta)
        self.p = int(p)

    def forward(self, student_feats: Mapping[str, torch.Tensor],
                teacher_feats: Mapping[str, torch.Tensor]) -> tuple[torch.Tensor, Stats]:
        missing = [f"{who}.{k}" for who, feats in (("student", student_feats), ("teacher", teacher_feats))
                   for k in self.layers if k not in feats]
        if missing:
            raise KeyError(f"attention transfer needs feature maps {missing}")
        terms = [at_term(student_feats[k], teacher_feats[k], self.p) for k in self.layers]
        parts = {f"at_{k}": float(t.detach()) for k, t in zip(self.layers, terms)}
        return self.beta / 2 * torch.stack(terms).sum(), parts


class StudentObjective(nn.Module):
    """Cross-entropy (optionally class-weighted) plus attention transfer; β = 0 is the baseline.

    ``forward(logits, targets, student_feats, teacher_feats=None)`` returns
    ``(loss, {"loss", "ce", "at", "at_layerN", ...})`` where ``at`` is the scaled
    term ``β/2 · Σ_j AT_j`` (so ``loss = ce + at``) and ``at_layerN`` the unscaled
    ``AT_j``.  With β = 0 the AT term is skipped (``layers`` are ignored, the
    teacher's features may be None, ``at`` is 0) and the loss is exactly
    ``F.cross_entropy``.  Raises ``FloatingPointError`` on a non-finite loss.
    """

    def __init__(self, layers: Sequence[str] = (), beta: float = 1000.0,
                 class_weights: torch.Tensor | None = None, p: int = 2) -> None:
        super().__init__()
        if not beta >= 0:
            raise ValueError(f"beta must be >= 0, got {beta}")
        self.beta = float(beta)
        self.at = AttentionTransferLoss(layers, beta, p) if beta > 0 else None
        # A buffer, so ``.to(device)`` moves the weights with the module.
        self.register_buffer("class_weights", class_weights, persistent=False)

    def forward(self, logits: torch.Tensor, targets: torch.Tensor, student_feats: Mapping[str, torch.Tensor],
                teacher_feats: Mapping[str, torch.Tensor] | None = None) -> tuple[torch.Tensor, Stats]:
        ce = F.cross_entropy(logits, targets, weight=self.class_weights)
        if self.at is None:
            loss, parts = ce, {"at": 0.0}
        else:
            if teacher_feats is None:
                raise ValueError("attention transfer (beta > 0) needs the teacher's feature maps")
            at, layer_parts = self.at(student_feats, teacher_feats)
            loss, parts = ce + at, {"at": float(at.detach()), **layer_parts}
        stats = {"loss": float(loss.detach()), "ce": float(ce.detach()), **parts}
        if not math.isfinite(stats["loss"]):
            raise FloatingPointError(f"student loss is not finite ({stats}): diverged training or a bad batch")
        return loss, stats
