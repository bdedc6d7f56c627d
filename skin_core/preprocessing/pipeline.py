"""Bytes of one image file in, one network-ready square RGB image out."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import cv2
import numpy as np

from skin_core.config import PreprocessConfig

from .border import remove_border
from .color import apply_color_constancy
from .decode import decode_image
from .resize import resize_square

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ProcessedImage:
    """A preprocessed image and where it came from in the decoded original.

    ``box`` is the border crop ``(x0, y0, x1, y1)`` (half-open) in the pixels
    of the decoded, upright original, whose size is ``original_size = (w, h)``.
    """

    image: np.ndarray
    had_border: bool
    box: tuple[int, int, int, int]
    original_size: tuple[int, int]


def preprocess_image(
    data: bytes,
    *,
    size: int = 224,
    min_side: int = 32,
    remove_borders: bool = True,
    border_crop: str = "inscribed",
    name: str = "",
    mode: str = "center_crop",
    color_constancy: str = "none",
    sog_power: float = 6.0,
) -> ProcessedImage:
    """Decode, crop away any dark border, correct the colour cast, and resize to ``size x size x 3`` uint8 RGB.

    Raises :class:`~skin_core.preprocessing.decode.ImageRejected` for unusable
    input (see :func:`decode_image`); ``border_crop`` is :func:`remove_border`'s
    ``crop``; ``mode`` is passed to :func:`resize_square`;
    ``color_constancy`` and ``sog_power`` to :func:`apply_color_constancy`. Colour
    constancy runs after border removal, so the black vignette does not pull the
    illuminant estimate, and before resizing, so it sees every original pixel.
    """
    rgb = decode_image(data, min_side=min_side, name=name)
    h, w = rgb.shape[:2]
    if remove_borders:
        cropped = remove_border(rgb, crop=border_crop)
        crop, box, had_border = cropped.image, cropped.box, cropped.had_border
    else:
        crop, box, had_border = rgb, (0, 0, w, h), False
    if had_border:
        logger.debug("image %s: border removed, kept box %s of %dx%d", name, box, w, h)
    crop = apply_color_constancy(crop, color_constancy, sog_power)
    return ProcessedImage(resize_square(crop, size, mode), had_border, box, (w, h))


def preprocess_with(data: bytes, config: PreprocessConfig, name: str = "") -> ProcessedImage:
    """:func:`preprocess_image` with every per-image setting of ``config``: the one call shared by
    preprocessing for training, ``skin evaluate``, ``skin predict`` and the served model, so they
    cannot drift apart (``batch_size`` only groups images into tasks and changes no pixel)."""
    return preprocess_image(data, size=config.size, min_side=config.min_side, remove_borders=config.remove_borders,
                            border_crop=config.border_crop, name=name, mode=config.resize_mode,
                            color_constancy=config.color_constancy, sog_power=config.sog_power)


def encode_png(rgb: np.ndarray, *, compression: int = 3) -> bytes:
    """Lossless PNG bytes of an RGB uint8 image (stored results are not re-degraded by JPEG)."""
    ok, buf = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_PNG_COMPRESSION, compression])
    if not ok:
        raise ValueError(f"PNG encoding failed for an array of shape {rgb.shape}")
    return buf.tobytes()


def decode_pngs(encoded: list[bytes] | np.ndarray) -> np.ndarray:
    """PNG/JPEG byte strings (as stored in the shards) → uint8 RGB array N×H×W×3 (equal sizes)."""
    images = [cv2.cvtColor(cv2.imdecode(np.frombuffer(b, np.uint8), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
              for b in encoded]
    return np.stack(images) if images else np.zeros((0, 0, 0, 3), np.uint8)
