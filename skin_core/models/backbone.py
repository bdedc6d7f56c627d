"""ResNet backbone shared by the metric teacher and the student.

One forward pass returns every tensor the later stages need: the four stage
feature maps (attention transfer), the global-pooled features (k-means in
DeepCluster) and an L2-normalised embedding (the Multi-Similarity loss).
"""

from __future__ import annotations

import logging
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torchvision import models

from skin_core.layers import LAYERS
from skin_core.models.weights import load_backbone_weights

logger = logging.getLogger(__name__)

ARCHS: dict[str, tuple[Callable[..., models.ResNet], int]] = {
    "resnet18": (models.resnet18, 512),
    "resnet34": (models.resnet34, 512),
    "resnet50": (models.resnet50, 2048),
}


# Downsampling of each torchvision ResNet stage relative to the input (stem /4, then /2 per later stage).
LAYER_STRIDES = {"layer1": 4, "layer2": 8, "layer3": 16, "layer4": 32}


def layer_grid(layer: str, size: int) -> int:
    """Side of ``layer``'s feature map for a ``size``×``size`` input (ceil, as the strided convs round up)."""
    return -(-size // LAYER_STRIDES[layer])


def check_transfer_layers(layers: Sequence[str], size: int) -> None:
    """ValueError when a transfer layer's map is a single cell: its attention map is always 1, AT is always 0."""
    flat = [k for k in layers if layer_grid(k, size) < 2]
    if flat:
        raise ValueError(f"attention transfer from {', '.join(flat)} at {size} px: the feature map is 1×1, so the "
                         f"transfer term is always 0; use preprocess.size >= {max(LAYER_STRIDES[k] for k in flat) + 1} "
                         f"or earlier layers")


def build_resnet(arch: str) -> models.ResNet:
    """A randomly initialised torchvision ResNet without its classifier (``fc`` is Identity)."""
    if arch not in ARCHS:
        raise ValueError(f"unknown arch {arch!r}; choose one of {', '.join(ARCHS)}")
    resnet = ARCHS[arch][0](weights=None)
    # Identity holds no parameters, so DDP never sees an unused classifier.
    resnet.fc = nn.Identity()
    return resnet


class Backbone(nn.Module):
    """ResNet-18/34/50 trunk plus a linear, L2-normalised embedding head.

    ``forward(x)`` returns a dict with the requested ``layers`` (feature maps),
    ``pooled`` (B×feature_dim) and ``embedding`` (B×embedding_dim, unit norm).
    Every stage and the head run on each call, so all parameters get gradients
    (no ``find_unused_parameters`` under DDP); ``layers`` only selects what is
    returned.  Any input of 32 px or more works: pooling is adaptive.
    """

    def __init__(self, arch: str = "resnet50", embedding_dim: int = 128, weights: str = "none",
                 layers: Sequence[str] = LAYERS) -> None:
        super().__init__()
        unknown = sorted(set(layers) - set(LAYERS))
        if unknown:
            raise ValueError(f"unknown layer(s) {unknown}; choose from {', '.join(LAYERS)}")
        if embedding_dim < 1:
            raise ValueError(f"embedding_dim must be positive, got {embedding_dim}")
        self.arch = arch
        self.body = build_resnet(arch)
        self.feature_dim = ARCHS[arch][1]
        self.embedding_dim = embedding_dim
        self.layers = tuple(layers)
        self.head = nn.Linear(self.feature_dim, embedding_dim)
        load_backbone_weights(self, weights)

    def trunk(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """The requested layer maps and the global-pooled features."""
        body = self.body
        out: dict[str, torch.Tensor] = {}
        h = body.maxpool(body.relu(body.bn1(body.conv1(x))))
        for name in LAYERS:
            h = getattr(body, name)(h)
            if name in self.layers:
                out[name] = h
        out["pooled"] = torch.flatten(body.avgpool(h), 1)
        return out

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        out = self.trunk(x)
        out["embedding"] = F.normalize(self.head(out["pooled"]), dim=1)
        return out
