"""The Ray Data actors that hold models (evaluation's predictor, attention's scorer), apart from their stages.

An actor's process imports the module that defines its class.  Beside their
stages that was MLflow, matplotlib and Ray Train as well: 6.7 s on 2 cores
before the actor took its first batch, against 4.2–4.6 s for torch and the
models alone, once per evaluation and attention stage.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import pandas as pd
import torch
from torch import nn

from skin_core import storage
from skin_core.attention import image_scores, models_maps
from skin_core.config import ModelConfig, PreprocessConfig
from skin_core.data.isic import read_lesion_mask
from skin_core.layers import LAYERS
from skin_core.models import create_model
from skin_core.models.bundle import LAST_WEIGHTS, bundle_folder, load_bundle
from skin_core.preprocessing import decode_pngs, preprocess_mask
from skin_core.training.student import predict_probs

KEPT, LAST = "kept", "last"  # which weights of a student: the epoch chosen on validation, or the last one
BOX = ["crop_x0", "crop_y0", "crop_x1", "crop_y1"]  # the border crop, in the shards


# ---------------------------------------------------------------- evaluation


class Predictor:
    """Ray Data actor holding every model to evaluate: loaded once, applied to many batches."""

    def __init__(self, models: dict[str, tuple[str, str]], threads: int) -> None:
        torch.set_num_threads(threads)
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        self.models = {name: _load(folder, weights).to(self.device) for name, (folder, weights) in models.items()}

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        out = {"image_id": batch["image_id"], "label_idx": batch["label_idx"]}
        for name, model in self.models.items():
            out[name] = predict_probs(model, batch["pixels"], self.device, amp=self.device.type == "cuda")
        return out


def _load(folder: str, weights: str) -> torch.nn.Module:
    """A student bundle with its kept weights, or with the last epoch's (``last.pt`` beside them)."""
    model, _ = load_bundle(folder)
    if weights == LAST:
        blob = storage.read_bytes(storage.join(bundle_folder(folder), LAST_WEIGHTS))
        state = torch.load(io.BytesIO(blob), map_location="cpu", weights_only=True)
        model.load_state_dict(state)
    return model.eval()


# ---------------------------------------------------------------- attention


@dataclass(frozen=True)
class Network:
    """A network to load where it runs (driver or Ray Data actor): a student bundle, or the teacher."""

    weights: str  # a student bundle folder, or the teacher's ``teacher.pt``
    teacher: ModelConfig | None = None  # the teacher's settings (arch, embedding size); None for a student

    def load(self) -> nn.Module:
        """The network in eval mode, returning every layer's feature map."""
        if self.teacher is not None:
            return create_model(self.teacher, head="embedding", layers=LAYERS, weights=self.weights).eval()
        return load_bundle(self.weights, layers=LAYERS)[0]


def lesion_mask(root: str, image_id: str, box: Sequence[int], preprocess: PreprocessConfig) -> np.ndarray | None:
    """The image's lesion mask on the preprocessed image's pixels, or None where the dataset has none."""
    try:
        mask = read_lesion_mask(root, image_id)
    except FileNotFoundError:
        return None
    return preprocess_mask(mask, tuple(int(v) for v in box), preprocess.size, preprocess.resize_mode)


class AttentionScorer:
    """Ray Data actor: the teacher and the students loaded once, per-image scores for many batches."""

    def __init__(self, networks: dict[str, Network], mask_root: str, preprocess: PreprocessConfig,
                 threads: int) -> None:
        torch.set_num_threads(threads)
        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        self.models = {name: network.load().to(self.device) for name, network in networks.items()}
        self.mask_root, self.preprocess = mask_root, preprocess

    def __call__(self, batch: dict[str, np.ndarray]) -> pd.DataFrame:
        boxes = np.stack([batch[c] for c in BOX], axis=1)
        masks = [lesion_mask(self.mask_root, i, box, self.preprocess) if self.mask_root else None
                 for i, box in zip(batch["image_id"], boxes)]
        maps = models_maps(self.models, decode_pngs(list(batch["image"])), self.device)
        return image_scores(list(batch["image_id"]), maps, masks)
