"""Bring an RGB image to the square input size of the network."""

from __future__ import annotations

from typing import Sequence

import cv2
import numpy as np

MODES = ("center_crop", "pad", "stretch")


def resize_square(rgb: np.ndarray, size: int = 224, mode: str = "center_crop") -> np.ndarray:
    """Return a ``size x size x 3`` uint8 RGB copy of ``rgb``.

    ``center_crop`` (default) cuts the centred square of the shorter side, then
    scales it: nothing is distorted and no artificial pixels are added, and the
    lesion is almost always centred (after border removal the input is near
    square anyway, so little is lost). ``pad`` keeps the whole image and fills
    the short side with the image's mean colour; black padding is avoided
    because it would imitate the vignette that border removal takes away.
    ``stretch`` scales the whole image straight to the square (the paper's
    "uniformly resized the images to 224×224"): every pixel is kept, at the
    price of a changed aspect ratio (4:3 HAM images are squeezed by a quarter).

    Downscaling uses ``INTER_AREA`` (no aliasing); upscaling uses ``INTER_CUBIC``.
    """
    check_square_args(size, mode)
    fill = [float(c) for c in rgb.reshape(-1, 3).mean(axis=0)] if mode == "pad" else 0.0
    return scale_square(to_square(rgb, mode, fill), size, grow=cv2.INTER_CUBIC)


def check_square_args(size: int, mode: str) -> None:
    """ValueError for an unknown ``mode`` or a ``size`` below 1."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    if size < 1:
        raise ValueError(f"size must be positive, got {size}")


def to_square(array: np.ndarray, mode: str, fill: float | Sequence[float] = 0.0) -> np.ndarray:
    """What ``mode`` scales to the square: the centred square of the shorter side, the whole array padded
    with ``fill``, or (``stretch``) the whole array as it is.

    The geometry every square input and its masks share: ``center_crop`` starts
    at ``((h - side) // 2, (w - side) // 2)``; ``pad`` puts ``(side - h) // 2``
    rows on top and ``(side - w) // 2`` columns on the left.
    """
    if mode == "stretch":
        return array
    return _center_crop(array) if mode == "center_crop" else _pad(array, fill)


def scale_square(square: np.ndarray, size: int, grow: int, shrink: int = cv2.INTER_AREA) -> np.ndarray:
    """``square`` (or, for ``stretch``, any rectangle) scaled to ``size x size``: ``shrink`` interpolation
    when no side grows, else ``grow``."""
    h, w = square.shape[:2]
    if h == w == size:
        return np.ascontiguousarray(square)
    interpolation = shrink if min(h, w) >= size else grow
    return cv2.resize(np.ascontiguousarray(square), (size, size), interpolation=interpolation)


def _center_crop(array: np.ndarray) -> np.ndarray:
    h, w = array.shape[:2]
    side = min(h, w)
    y0, x0 = (h - side) // 2, (w - side) // 2
    return array[y0 : y0 + side, x0 : x0 + side]


def _pad(array: np.ndarray, fill: float | Sequence[float]) -> np.ndarray:
    h, w = array.shape[:2]
    side = max(h, w)
    top, left = (side - h) // 2, (side - w) // 2
    return cv2.copyMakeBorder(
        np.ascontiguousarray(array), top, side - h - top, left, side - w - left, cv2.BORDER_CONSTANT, value=fill
    )
