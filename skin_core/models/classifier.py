"""The classification student: the same ResNet trunk with a linear classifier over ``CLASSES``."""

from __future__ import annotations

from typing import Sequence

import torch

from skin_core.classes import CLASSES
from skin_core.layers import LAYERS
from skin_core.models.backbone import Backbone


class Classifier(Backbone):
    """ResNet-18/34/50 whose head is an ``len(CLASSES)``-way linear classifier.

    ``forward(x)`` returns the chosen layer maps (for attention transfer),
    ``pooled`` and ``logits``.  Sharing the trunk with the teacher keeps the maps
    of both at the same resolutions for the same input size.
    """

    def __init__(self, arch: str = "resnet50", num_classes: int = len(CLASSES), weights: str = "none",
                 layers: Sequence[str] = LAYERS) -> None:
        super().__init__(arch, embedding_dim=num_classes, weights="none", layers=layers)
        if weights != "none":  # pretrained trunks only: the classifier head starts fresh
            from skin_core.models.weights import load_backbone_weights

            load_backbone_weights(self.body, weights)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        out = self.trunk(x)
        out["logits"] = self.head(out["pooled"])
        return out
