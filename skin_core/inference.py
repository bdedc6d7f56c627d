"""Predict images one by one with a trained student, preprocessed exactly as in training."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from skin_core import storage
from skin_core.classes import CLASSES
from skin_core.models.bundle import ModelCard
from skin_core.preprocessing import ImageRejected, preprocess_with
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


def predict_uris(model: torch.nn.Module, card: ModelCard, sources: list[str | bytes]) -> list[ImagePrediction]:
    """One prediction per image (a path, an s3:// URI or encoded bytes); a bad one gets its error, the rest are predicted."""
    results = []
    for i, source in enumerate(sources):
        name = f"image {i} (bytes)" if isinstance(source, bytes) else source
        try:
            data = source if isinstance(source, bytes) else storage.read_bytes(source)
            done = preprocess_with(data, card.preprocess, name=name)
        except (ImageRejected, OSError) as err:
            results.append(ImagePrediction(name, error=str(err) or type(err).__name__))
            continue
        results.append(ImagePrediction(name, probs=predict_probs(model, done.image[None])[0]))
    return results
