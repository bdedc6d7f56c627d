"""Several networks over the same images: their attention maps, each student's AT distance to the
teacher, and each network's lesion focus, per image and layer.

Everything is computed with :mod:`skin_core.attention.maps` (the loss's own
functions) and :func:`skin_core.attention.focus.mask_share`, so the panels,
the tables and the training term measure the same thing.  The per-image rows
(:func:`image_scores`) are the unit a batch job maps over images; the tables
(:func:`mean_table`) average them.
"""

from __future__ import annotations

import logging
from typing import Mapping, Sequence

import numpy as np
import pandas as pd
from torch import nn

from skin_core.attention.focus import mask_share
from skin_core.attention.maps import at_distances, attention_maps
from skin_core.layers import LAYERS

logger = logging.getLogger(__name__)

TEACHER = "teacher"
UNIFORM = "uniform map (lesion area)"  # the lesion-focus reference: what a map that looks everywhere gets
SCORE_COLUMNS = ("image_id", "model", "layer", "at_distance", "lesion_share", "lesion_area")

ModelMaps = Mapping[str, Mapping[str, np.ndarray]]  # model -> layer -> N×h×w maps


def models_maps(models: Mapping[str, nn.Module], images_uint8: np.ndarray, device: str = "cpu",
                layers: Sequence[str] = LAYERS) -> dict[str, dict[str, np.ndarray]]:
    """Per model, per layer, the N×h×w maps ``Q`` of the same images (models already on ``device``)."""
    return {name: attention_maps(model, images_uint8, layers, device) for name, model in models.items()}


def teacher_distances(maps: ModelMaps, teacher: str = TEACHER) -> dict[str, dict[str, np.ndarray]]:
    """Per model other than ``teacher``, per layer, the N per-image ``AT_j`` to the teacher's maps.

    Every layer is measured, transferred or not: for the baseline, and for the
    layers a student did not transfer, it is how far attention is without transfer.
    """
    if teacher not in maps:
        raise ValueError(f"no {teacher!r} among the models {sorted(maps)}: distances are to the teacher")
    return {name: at_distances(m, maps[teacher]) for name, m in maps.items() if name != teacher}


def one_image(per_model: Mapping[str, Mapping[str, np.ndarray]], index: int) -> dict[str, dict]:
    """Image ``index`` of per-model per-layer arrays: maps (h×w) or distances (floats)."""
    return {name: {layer: (v[index] if np.ndim(v) > 1 else float(v[index])) for layer, v in layers.items()}
            for name, layers in per_model.items()}


def image_scores(image_ids: Sequence[str], maps: ModelMaps, masks: Sequence[np.ndarray | None],
                 teacher: str = TEACHER) -> pd.DataFrame:
    """One row per image, model and layer (``SCORE_COLUMNS``).

    ``at_distance`` is NaN for the teacher; ``lesion_share`` (the share of the
    map's mass inside the lesion) and ``lesion_area`` (the mask's area fraction:
    a uniform map's share) are NaN where an image has no mask (``None``).
    """
    if len(masks) != len(image_ids):
        raise ValueError(f"{len(masks)} masks for {len(image_ids)} images")
    distances = teacher_distances(maps, teacher)
    rows = []
    for i, image_id in enumerate(image_ids):
        mask = masks[i]
        area = float(np.mean(mask != 0)) if mask is not None else np.nan
        for name, layers in maps.items():
            for layer, q in layers.items():
                share = mask_share(q[i], mask) if mask is not None else np.nan
                distance = float(distances[name][layer][i]) if name in distances else np.nan
                rows.append((str(image_id), name, layer, distance, share, area))
    return pd.DataFrame(rows, columns=list(SCORE_COLUMNS))


def mean_table(scores: pd.DataFrame, column: str) -> pd.DataFrame:
    """Model × layer mean of ``column`` over the images that have it (models in first-seen order)."""
    known = scores.dropna(subset=[column])
    table = known.pivot_table(index="model", columns="layer", values=column, aggfunc="mean")
    order = [m for m in dict.fromkeys(scores["model"]) if m in table.index]
    return table.reindex(index=order, columns=[k for k in LAYERS if k in table.columns])


def lesion_focus_table(scores: pd.DataFrame) -> pd.DataFrame:
    """Mean lesion share per model and layer, with the mean lesion area as the uniform-map reference row."""
    focus = mean_table(scores, "lesion_share")
    if focus.empty:
        return focus
    area = scores.dropna(subset=["lesion_area"]).drop_duplicates("image_id")["lesion_area"].mean()
    focus.loc[UNIFORM] = area
    return focus
