"""Attention maps of a network, computed with the attention-transfer loss's own functions.

What is drawn and measured is what is trained: per layer ``j`` and image, the
map is ``Q_j = vec(1/C Σ_c |A_c|^p) / ||·||_2``
(:func:`skin_core.losses.attention_transfer.attention_map`) laid back on the
layer's h×w grid, and the distance to the teacher is the loss's ``AT_j`` for
that one image (Zagoruyko & Komodakis, ICLR 2017, Eq. 2).
"""

from __future__ import annotations

import logging
from typing import Mapping, Sequence

import numpy as np
import torch
from torch import nn

from skin_core.data.transforms import to_input
from skin_core.losses.attention_transfer import attention_map, check_layers, normalise, resize_map

logger = logging.getLogger(__name__)


def attention_maps(model: nn.Module, images_uint8: np.ndarray, layers: Sequence[str], device: str = "cpu",
                   p: int = 2, batch_size: int = 32) -> dict[str, np.ndarray]:
    """Per layer, an N×h×w float array of the maps ``Q`` of ``images_uint8`` (N×H×W×3 uint8).

    The model (already on ``device``) runs in eval mode without gradients, in
    batches of ``batch_size``; its training mode is restored afterwards.  It
    must return ``layers`` in its output dict (build it with ``layers=``).
    """
    layers = check_layers(layers)
    images = check_images(images_uint8)
    was_training = model.training
    model.eval()
    try:
        chunks = [batch_maps(model, images[i:i + batch_size], layers, device, p)
                  for i in range(0, len(images), batch_size)]
    finally:
        model.train(was_training)
    return {k: np.concatenate([chunk[k] for chunk in chunks]) for k in layers}


def check_images(images: np.ndarray) -> np.ndarray:
    """``images`` as a non-empty N×H×W×3 uint8 array; ValueError otherwise."""
    images = np.asarray(images)
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3 or len(images) == 0:
        raise ValueError(f"images_uint8 must be a non-empty N×H×W×3 uint8 array, "
                         f"got shape {images.shape} of {images.dtype}")
    return images


@torch.no_grad()
def batch_maps(model: nn.Module, images: np.ndarray, layers: Sequence[str], device: str,
               p: int) -> dict[str, np.ndarray]:
    """One forward pass: the maps of ``layers`` for one batch."""
    feats = model(to_input(torch.from_numpy(np.ascontiguousarray(images)), device))
    missing = [k for k in layers if k not in feats]
    if missing:
        raise ValueError(f"layers {missing} are not in the model's outputs {sorted(feats)}; "
                         f"build the model with layers= including them")
    return {k: layer_map(feats[k], p) for k in layers}


def layer_map(features: torch.Tensor, p: int = 2) -> np.ndarray:
    """N×h×w numpy maps ``Q`` of one layer's B×C×h×w features: ``attention_map`` on the layer grid."""
    n, _, h, w = features.shape
    return attention_map(features, p).reshape(n, h, w).detach().cpu().numpy()


def at_distances(student_maps: Mapping[str, np.ndarray],
                 teacher_maps: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Per layer present in both, the N per-image ``AT_j`` between student and teacher maps.

    ``AT_j(i) = mean over the student's h·w positions of (Q_s − Q_t)²``, where the
    teacher's map is brought to the student's grid by ``resize_map`` and then
    re-normalised, as ``at_term`` does.  ``at_term`` resizes the channel map
    before normalising; resizing ``Q_t`` instead gives the same result because
    ``resize_map`` is linear and the normalisation removes the per-image scale.
    So the mean over a batch of these values is ``at_term`` of that batch.
    Maps may be ``Q`` or any positive per-image multiple (e.g. the raw channel map).
    """
    layers = [k for k in student_maps if k in teacher_maps]
    if not layers:
        raise ValueError(f"student and teacher maps share no layer: {sorted(student_maps)} vs {sorted(teacher_maps)}")
    return {k: per_image_at(student_maps[k], teacher_maps[k], k) for k in layers}


def per_image_at(student: np.ndarray, teacher: np.ndarray, layer: str = "") -> np.ndarray:
    """N per-image ``AT_j`` of N×h×w student and N×h'×w' teacher maps (see :func:`at_distances`)."""
    q_s, q_t = torch.as_tensor(np.asarray(student)), torch.as_tensor(np.asarray(teacher))
    if q_s.dim() != 3 or q_t.dim() != 3 or len(q_s) != len(q_t):
        raise ValueError(f"{layer or 'maps'}: need N×h×w student and teacher maps with equal N, "
                         f"got {tuple(q_s.shape)} and {tuple(q_t.shape)}")
    q_t = normalise(resize_map(q_t.unsqueeze(1), tuple(q_s.shape[-2:])))
    return (normalise(q_s.unsqueeze(1)) - q_t).pow(2).mean(dim=1).numpy()
