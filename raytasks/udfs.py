"""The functions Ray Data maps over batches: preprocessing manifest rows, and decoding shard rows for training.

Kept apart and light to import (numpy, pandas and OpenCV; no torch, no MLflow):
every Ray Data task process that runs one imports this module first, and on a
small node those imports are a good part of a stage's start-up.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from skin_core.config import PreprocessConfig
from skin_core.partitioning.holdout import lesion_holdout
from skin_core.preprocessing.pipeline import decode_pngs
from skin_core.preprocessing.records import preprocess_frame

KNN_HOLDOUT = 0.2  # share of lesions whose images the teacher's k-NN evaluation classifies


def preprocess_block(frame: pd.DataFrame, config: PreprocessConfig) -> pd.DataFrame:
    """Manifest rows → the same rows with the preprocessed image and its record (``preprocess_frame``)."""
    import cv2

    cv2.setNumThreads(1)  # Ray already runs one task per CPU; OpenCV's own pool would oversubscribe
    return preprocess_frame(frame, config)


def decode_labeled(batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """image_id, decoded ``pixels`` (uint8 N×H×W×3) and ``label_idx``."""
    return {"image_id": batch["image_id"], "pixels": decode_pngs(list(batch["image"])),
            "label_idx": batch["label_idx"].astype(np.int64)}


def decode_for_teacher(batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The same plus the fixed lesion hold-out of the teacher's k-NN evaluation (labels evaluate only)."""
    return {**decode_labeled(batch), "heldout": lesion_holdout(batch["lesion_id"], KNN_HOLDOUT)}


def decode_split(batch: dict[str, np.ndarray], val_ids: frozenset[str]) -> dict[str, np.ndarray]:
    """Decoded pixels and labels, and whether each row is a validation image (training stages read both
    splits in one pass)."""
    decoded = decode_labeled(batch)
    return {"pixels": decoded["pixels"], "label_idx": decoded["label_idx"],
            "is_val": np.array([i in val_ids for i in batch["image_id"]], dtype=bool)}
