"""Bring an RGB image to the square input size of the network."""

from __future__ import annotations

import cv2
import numpy as np

MODES = ("center_crop", "pad")


def resize_square(rgb: np.ndarray, size: int = 224, mode: str = "center_crop") -> np.ndarray:
    """Return a ``size x size x 3`` uint8 RGB copy of ``rgb``.

    ``center_crop`` (default) cuts the centred square of the shorter side, then
    scales it: nothing is distorted and no artificial pixels are added, and the
    lesion is almost always centred (after border removal the input is near
    square anyway, so little is lost). ``pad`` keeps the whole image and fills
    the short side with the image's mean colour; black padding is avoided
    because it would imitate the vignette that border removal takes away.

    Downscaling uses ``INTER_AREA`` (no aliasing); upscaling uses ``INTER_CUBIC``.
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    if size < 1:
        raise ValueError(f"size must be positive, got {size}")
    square = _center_crop(rgb) if mode == "center_crop" else _pad(rgb)
    side = square.shape[0]
    if side == size:
        return np.ascontiguousarray(square)
    interpolation = cv2.INTER_AREA if side > size else cv2.INTER_CUBIC
    return cv2.resize(np.ascontiguousarray(square), (size, size), interpolation=interpolation)


def _center_crop(rgb: np.ndarray) -> np.ndarray:
    h, w = rgb.shape[:2]
    side = min(h, w)
    y0, x0 = (h - side) // 2, (w - side) // 2
    return rgb[y0 : y0 + side, x0 : x0 + side]


def _pad(rgb: np.ndarray) -> np.ndarray:
    h, w = rgb.shape[:2]
    side = max(h, w)
    top, left = (side - h) // 2, (side - w) // 2
    fill = [float(c) for c in rgb.reshape(-1, 3).mean(axis=0)]
    return cv2.copyMakeBorder(
        np.ascontiguousarray(rgb), top, side - h - top, left, side - w - left, cv2.BORDER_CONSTANT, value=fill
    )
