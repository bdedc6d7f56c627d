"""One way to build the networks: the teacher's embedding backbone or the student's classifier, from the config."""

from __future__ import annotations

from typing import Sequence

import torch

from skin_core.classes import CLASSES
from skin_core.config import ModelConfig
from skin_core.layers import LAYERS
from skin_core.models.backbone import Backbone
from skin_core.models.classifier import Classifier

HEADS = ("embedding", "classifier")


def create_model(model: ModelConfig, head: str, layers: Sequence[str] = LAYERS, weights: str | None = None) -> Backbone:
    """``head="embedding"``: the metric teacher (L2-normalised ``model.embedding_dim`` head);
    ``head="classifier"``: the student (logits over ``CLASSES``).  ``layers`` are the feature maps
    the forward pass returns; ``weights`` overrides ``model.weights`` (a trained teacher's file).

    The weights are laid out channels_last: the input batches already are (``to_unit`` permutes uint8
    N×H×W×3), and a network in the other layout converts its weights in every convolution (measured on
    2 CPU cores, ResNet-18 at 64 px, the student's ``train_epoch``: 141 against 128 images/s)."""
    source = model.weights if weights is None else weights
    if head == "embedding":
        network = Backbone(model.arch, model.embedding_dim, weights=source, layers=layers)
    elif head == "classifier":
        network = Classifier(model.arch, len(CLASSES), weights=source, layers=layers)
    else:
        raise ValueError(f"unknown model head {head!r}; use one of {', '.join(HEADS)}")
    return network.to(memory_format=torch.channels_last)
