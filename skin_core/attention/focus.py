"""Lesion focus: the share of a network's attention that falls on the lesion.

The attention mass of a grid cell is the attention map ``Q`` itself
(:func:`skin_core.attention.maps.attention_maps`).  ``Q`` is the channel mean
of ``|A_c|^p`` divided by a per-image constant, so its share inside the mask is
the share of the raw channel map, the activation energy the loss transfers.
``Q²`` also sums to 1, but it squares that energy (in effect doubling ``p``),
which exaggerates peaks and ties the measure to the loss's L2 normalisation
instead of to the map; it is not used.
"""

from __future__ import annotations

import cv2
import numpy as np


def mask_share(attention: np.ndarray, mask: np.ndarray) -> float:
    """``Σ a·m / Σ a``: the share of attention mass inside the lesion mask.

    ``attention`` is an h×w non-negative map; ``mask`` an H×W lesion mask (true
    or non-zero on the lesion) of the same image, at least as large as the map.
    ``m`` is the fraction of each map cell the lesion covers (area averaging).
    With a uniform map the share is therefore exactly the mask's area fraction.
    """
    a = check_attention(attention)
    return float((a * mask_on_grid(mask, a.shape)).sum() / a.sum())


def check_attention(attention: np.ndarray) -> np.ndarray:
    """``attention`` as a float64 2-D array; ValueError if negative, non-finite or all zero."""
    a = np.asarray(attention, dtype=np.float64)
    if a.ndim != 2:
        raise ValueError(f"attention must be a 2-D h×w map, got shape {a.shape}")
    if not np.isfinite(a).all() or (a < 0).any():
        raise ValueError("attention must be finite and non-negative (pass the map Q, not a difference)")
    if a.sum() == 0:
        raise ValueError("attention is empty (sums to 0): there is no mass to share")
    return a


def mask_on_grid(mask: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """The covered fraction of each cell of an h×w grid laid over the H×W ``mask`` (``INTER_AREA``)."""
    mask = np.asarray(mask)
    h, w = shape
    if mask.ndim != 2 or mask.shape[0] < h or mask.shape[1] < w:
        raise ValueError(f"mask must be a 2-D H×W array at least as large as the {h}x{w} attention grid, "
                         f"got shape {mask.shape}")
    return cv2.resize((mask != 0).astype(np.float64), (w, h), interpolation=cv2.INTER_AREA)
