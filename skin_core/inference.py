"""Predict images one by one with a trained student, preprocessed exactly as in training."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from skin_core import storage
from skin_core.classes import CLASSES
from skin_core.models.bundle import ModelCard
from skin_core.preprocessing import ImageRejected, preprocess_image
from skin_core.training.student import predict_probs


@dataclass(frozen=True)
class ImagePrediction:
    """Class probabilities for one image, or why there are none."""

    uri: str
    probs: np.ndarray | None = None
    error: str = ""

    def top(self, k: int = 3) -> list[tuple[str, float]]:
        order = np.argsort(self.probs)[::-1][:k]
        return [(CLASSES[i], float(self.probs[i])) for i in order]


def predict_uris(model: torch.nn.Module, card: ModelCard, uris: list[str]) -> list[ImagePrediction]:
    """One prediction per URI; an unreadable or rejected image gets its error, the rest are predicted."""
    results = []
    for uri in uris:
        try:
            p = card.preprocess
            done = preprocess_image(storage.read_bytes(uri), size=p.size, min_side=p.min_side,
                                    remove_borders=p.remove_borders, mode=p.resize_mode, name=uri)
        except (ImageRejected, OSError) as err:
            results.append(ImagePrediction(uri, error=str(err) or type(err).__name__))
            continue
        results.append(ImagePrediction(uri, probs=predict_probs(model, done.image[None])[0]))
    return results
