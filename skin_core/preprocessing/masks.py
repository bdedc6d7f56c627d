"""Lesion masks through the preprocessing geometry: the same border crop and square resize as the image."""

from __future__ import annotations

import cv2
import numpy as np

from .resize import check_square_args, scale_square, to_square

COVERED = 0.5  # a pixel of the resized mask is lesion when at least half of it was


def preprocess_mask(mask: np.ndarray, box: tuple[int, int, int, int], size: int = 224,
                    mode: str = "center_crop") -> np.ndarray:
    """The ``size x size`` bool mask aligned with :func:`~.pipeline.preprocess_image`'s output.

    ``mask`` (H×W, non-zero on the lesion) is in the pixels of the decoded
    original; ``box`` is the stored border crop ``(x0, y0, x1, y1)``, half-open
    (shard columns ``crop_x0 .. crop_y1``).  The crop and square come from
    :func:`~.resize.to_square`, as for the image, except that padding is never
    lesion (fill 0).  Scaling is by covered fraction, area-averaged when
    shrinking and bilinear when growing, then thresholded at ``COVERED``.
    """
    check_square_args(size, mode)
    crop = crop_to_box(mask, box).astype(np.float32)
    covered = scale_square(to_square(crop, mode, 0.0), size, grow=cv2.INTER_LINEAR)
    return covered >= COVERED


def crop_to_box(mask: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray:
    """``mask[y0:y1, x0:x1] != 0``; ValueError unless ``mask`` is 2-D and ``box`` a non-empty box inside it."""
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"mask must be a 2-D H×W array, got shape {mask.shape}")
    h, w = mask.shape
    x0, y0, x1, y1 = (int(v) for v in box)
    if not (0 <= x0 < x1 <= w and 0 <= y0 < y1 <= h):
        raise ValueError(f"box {tuple(box)} is not a non-empty (x0, y0, x1, y1) box inside the {w}x{h} mask")
    return mask[y0:y1, x0:x1] != 0
