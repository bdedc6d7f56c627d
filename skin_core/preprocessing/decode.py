"""Turn the bytes of an image file into an RGB ``uint8`` array, or reject it.

OpenCV does the decoding; Pillow is used only where OpenCV cannot help (reading
the EXIF orientation of a PNG, and as a fallback decoder). Every failure comes
out as :class:`ImageRejected`, so a batch job can count rejects by ``reason``
instead of dying on whichever library error a bad file happens to trigger.
"""

from __future__ import annotations

import io
import logging

import cv2
import numpy as np
from PIL import Image, ImageOps

logger = logging.getLogger(__name__)

_JPEG_MAGIC = b"\xff\xd8\xff"
_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
_BMP_MAGIC = b"BM"

# Reason codes carried by ImageRejected.
EMPTY = "empty"
UNSUPPORTED = "unsupported"
CORRUPT = "corrupt"
TRUNCATED = "truncated"
TOO_SMALL = "too_small"


class ImageRejected(ValueError):
    """An input that cannot become a usable image.

    ``reason`` is a short machine-usable code (``empty``, ``unsupported``,
    ``corrupt``, ``truncated``, ``too_small``); the message names the image.
    """

    def __init__(self, reason: str, message: str = "") -> None:
        super().__init__(message or reason)
        self.reason = reason

    def __reduce__(self):
        # Survive pickling (worker processes send exceptions back to the driver).
        return type(self), (self.reason, str(self))


def decode_image(data: bytes, *, min_side: int = 32, name: str = "") -> np.ndarray:
    """Decode a JPEG, PNG or BMP file to an ``HxWx3`` RGB ``uint8`` array.

    EXIF orientation is applied, so the array is upright as a viewer shows it.
    Grey images are replicated to three channels; 16-bit images are scaled to
    8 bits (``round(v / 257)``, so 65535 -> 255) rather than clipped; CMYK
    JPEGs are converted to RGB. Transparent pixels are composited on white:
    black would look like the dark vignette that border removal crops away.

    Raises :class:`ImageRejected` for empty, non-image, corrupt or truncated
    data and for images whose shorter side is under ``min_side``; no other
    exception escapes. Damage inside JPEG scan data is not detected: libjpeg
    conceals it and only warns on stderr.
    """
    label = name or "<unnamed>"
    if not data:
        raise ImageRejected(EMPTY, f"image {label}: no bytes")
    kind = _sniff(data)
    if kind is None:
        raise ImageRejected(UNSUPPORTED, f"image {label}: not a JPEG, PNG or BMP file")
    if not _is_complete(kind, data):
        raise ImageRejected(TRUNCATED, f"image {label}: {kind} data ends early")
    try:
        rgb = _decode(kind, data)
    except ImageRejected as exc:
        raise ImageRejected(exc.reason, f"image {label}: {exc}") from exc
    except Exception as exc:  # any library error means the file is unusable
        logger.debug("decoding %s failed", label, exc_info=True)
        raise ImageRejected(CORRUPT, f"image {label}: cannot decode {kind} ({type(exc).__name__})") from exc
    h, w = rgb.shape[:2]
    if min(h, w) < min_side:
        raise ImageRejected(TOO_SMALL, f"image {label}: {w}x{h} is under {min_side} px on a side")
    return rgb


def _sniff(data: bytes) -> str | None:
    """Format from the magic bytes; file names and extensions are not trusted."""
    if data.startswith(_JPEG_MAGIC):
        return "jpeg"
    if data.startswith(_PNG_MAGIC):
        return "png"
    if data.startswith(_BMP_MAGIC) and len(data) >= 26:
        return "bmp"
    return None


def _is_complete(kind: str, data: bytes) -> bool:
    """Whether the file ends where its format says it should.

    Decoders fill a cut-off image with grey instead of failing (libjpeg only
    warns), so truncation has to be checked on the bytes.
    """
    if kind == "jpeg":
        # Entropy-coded data cannot contain 0xFFD9, so a file cut inside a scan
        # never ends with EOI. The second test accepts junk after a real EOI
        # while ignoring the EOI of an EXIF thumbnail near the start.
        ends_with_eoi = data.rstrip(b"\x00").endswith(b"\xff\xd9")
        return ends_with_eoi or data.rfind(b"\xff\xd9") > data.rfind(b"\xff\xda") >= 0
    if kind == "png":
        return data.rfind(b"IEND") > data.rfind(b"IDAT") >= 0
    declared = int.from_bytes(data[2:6], "little")  # BMP file size; some writers leave 0
    return declared == 0 or len(data) >= declared


def _decode(kind: str, data: bytes) -> np.ndarray:
    buf = np.frombuffer(data, np.uint8)
    if kind == "jpeg":
        # IMREAD_COLOR applies EXIF orientation and converts grey/CMYK to BGR.
        bgr = cv2.imdecode(buf, cv2.IMREAD_COLOR)
        if bgr is None:
            return _decode_with_pillow(data)
        return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    # UNCHANGED keeps alpha and 16-bit depth, which IMREAD_COLOR would drop/shift.
    raw = cv2.imdecode(buf, cv2.IMREAD_UNCHANGED)
    if raw is None:
        return _decode_with_pillow(data)
    if kind == "bmp" and raw.ndim == 3 and raw.shape[2] == 4 and raw[:, :, 3].max() == 0:
        raw = raw[:, :, :3]  # all-zero alpha is the unused padding byte of 32-bpp BMPs
    rgb = _to_rgb8(raw)
    if kind == "png" and b"eXIf" in data:
        rgb = _apply_png_orientation(rgb, data)
    return rgb


def _to_rgb8(raw: np.ndarray) -> np.ndarray:
    """OpenCV's grey / BGR / BGRA array of any depth -> RGB uint8."""
    img = _to_uint8(raw)
    if img.ndim == 2:
        return cv2.cvtColor(img, cv2.COLOR_GRAY2RGB)
    if img.shape[2] == 4:
        return _composite_on_white(cv2.cvtColor(img, cv2.COLOR_BGRA2RGBA))
    if img.shape[2] == 3:
        return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
    if img.shape[2] == 1:
        return cv2.cvtColor(img[:, :, 0], cv2.COLOR_GRAY2RGB)
    raise ImageRejected(UNSUPPORTED, f"{img.shape[2]}-channel image")


def _to_uint8(img: np.ndarray) -> np.ndarray:
    if img.dtype == np.uint8:
        return img
    if img.dtype == np.uint16:
        # Scale the full 16-bit range onto 8 bits; clipping would saturate almost everything.
        return ((img.astype(np.uint32) + 128) // 257).astype(np.uint8)
    raise ImageRejected(UNSUPPORTED, f"pixel type {img.dtype}")


def _composite_on_white(rgba: np.ndarray) -> np.ndarray:
    if rgba[:, :, 3].min() == 255:
        return np.ascontiguousarray(rgba[:, :, :3])
    alpha = rgba[:, :, 3:4].astype(np.float32) / 255.0
    rgb = rgba[:, :, :3].astype(np.float32) * alpha + 255.0 * (1.0 - alpha)
    return np.rint(rgb).astype(np.uint8)


def _apply_png_orientation(rgb: np.ndarray, data: bytes) -> np.ndarray:
    """Honour a PNG eXIf orientation tag (OpenCV ignores it when keeping alpha)."""
    orientation = Image.open(io.BytesIO(data)).getexif().get(0x0112, 1)
    return np.ascontiguousarray(_ORIENT.get(orientation, lambda a: a)(rgb))


# EXIF orientation -> the transform that makes the stored pixels upright.
_ORIENT = {
    2: lambda a: a[:, ::-1],
    3: lambda a: a[::-1, ::-1],
    4: lambda a: a[::-1],
    5: lambda a: a.transpose(1, 0, 2),
    6: lambda a: np.rot90(a, -1),
    7: lambda a: np.rot90(a, 2).transpose(1, 0, 2),
    8: lambda a: np.rot90(a, 1),
}


def _decode_with_pillow(data: bytes) -> np.ndarray:
    """Fallback for files OpenCV refuses; Pillow raises on truncation by default."""
    logger.debug("OpenCV could not decode the data; trying Pillow")
    with Image.open(io.BytesIO(data)) as img:
        img.load()
        img = ImageOps.exif_transpose(img)
        if img.mode in ("RGBA", "LA", "PA") or "transparency" in img.info:
            rgba = np.asarray(img.convert("RGBA"))
            return _composite_on_white(rgba)
        if img.mode.startswith("I;16") or img.mode == "I":
            return _to_rgb8(np.clip(np.asarray(img), 0, 65535).astype(np.uint16))
        return np.asarray(img.convert("RGB"))
