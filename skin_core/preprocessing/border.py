"""Find and crop away the dark border or circular vignette of a dermoscopy image.

Many BCN20000 images show the round field of view (FOV) of the dermatoscope on
black; a few HAM10000 and MSK images have black corners where the lens circle
is a little larger than the frame. The black is a strong cue of the source
collection, and the collections differ in class mix, so a model would learn it
as a shortcut. Either crop leaves no black: the rectangle inscribed in the FOV,
or the FOV's bounding box with the outside filled (``CROPS``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import cv2
import numpy as np

logger = logging.getLogger(__name__)


CROPS = ("inscribed", "bbox_fill")


@dataclass(frozen=True)
class BorderResult:
    """``image`` after border removal, the crop ``box`` and whether one was found.

    ``box`` is ``(x0, y0, x1, y1)`` in input pixels, half-open, so the crop is
    ``input[y0:y1, x0:x1]`` (with the outside of the field of view filled, for
    ``bbox_fill``); without a border it is the full image.
    """

    image: np.ndarray
    box: tuple[int, int, int, int]
    had_border: bool


@dataclass(frozen=True)
class Detection:
    """How a dark border is told apart and segmented (see :func:`field_of_view`)."""

    corner_fraction: float = 0.05
    dark_corner_level: float = 50.0
    min_dark_corners: int = 3
    min_contrast: float = 50.0
    threshold_range: tuple[int, int] = (30, 60)
    work_side: int = 256


def remove_border(rgb: np.ndarray, *, crop: str = "inscribed", min_keep: float = 0.98,
                  detection: Detection = Detection()) -> BorderResult:
    """Crop ``rgb`` (HxWx3 uint8) to its field of view (FOV, see :func:`field_of_view`), if it has a border.

    ``crop="inscribed"``: the largest axis-aligned rectangle inscribed in the FOV.
    No black is left, but for a round FOV it keeps only the central 64% of the
    circle (the lesion is usually centred; one near the rim is cut). Where the
    circle is wider than the frame (black corners only) the rectangle is much larger.

    ``crop="bbox_fill"``: the FOV's bounding box, with the pixels outside the FOV
    (the black corners of the box, about 21% of it for a circle) set to the mean
    colour inside the FOV. The whole FOV is kept and no black is left; the filled
    corners are flat skin colour, a cue of a vignetted source much weaker than black.

    Images without a border come back untouched (the same array,
    ``had_border=False``), and so do, for ``inscribed``, those whose crop would
    keep at least ``min_keep`` of their area: a sliver is not worth a crop.
    Filling loses no pixel, so ``bbox_fill`` fills even small black corners.
    """
    if crop not in CROPS:
        raise ValueError(f"crop must be one of {CROPS}, got {crop!r}")
    h, w = rgb.shape[:2]
    untouched = BorderResult(rgb, (0, 0, w, h), False)
    small = _thumbnail_fov(rgb, detection)
    if small is None:
        return untouched
    if crop == "inscribed":
        x0, y0, x1, y1 = _to_input_pixels(_largest_inscribed_rect(small), small.shape, (h, w))
        unchanged, enough = (x1 - x0) * (y1 - y0), min_keep * w * h
    else:
        fov = _to_input_mask(small, (h, w))
        x0, y0, x1, y1 = _bounding_box(fov)
        unchanged, enough = int(fov.sum()), w * h
    if unchanged >= enough or x1 <= x0 or y1 <= y0:
        return untouched
    image = np.ascontiguousarray(rgb[y0:y1, x0:x1])
    if crop == "bbox_fill":
        image = _fill_outside(image, fov[y0:y1, x0:x1])
    return BorderResult(image, (x0, y0, x1, y1), True)


def field_of_view(rgb: np.ndarray, detection: Detection = Detection()) -> np.ndarray | None:
    """H×W bool mask of the field of view of an image with a dark border; None when it has none.

    Detection: at least ``min_dark_corners`` of the four corner patches (each
    ``corner_fraction`` of the shorter side) must be dark (mean of max(R,G,B)
    under ``dark_corner_level``) while the centre is at least ``min_contrast``
    brighter. A lesion that touches the edge darkens one or two corners, not
    three, so it is not mistaken for a vignette.

    Segmentation, on a thumbnail of ``work_side`` pixels for speed: Otsu
    threshold on the value channel, clamped to ``threshold_range`` so that it
    separates black from skin instead of lesion from skin; opening removes
    specks, closing bridges hairs; the largest external contour is the FOV and
    its convex hull fills dark lesions or hair that cut into its rim.
    """
    small = _thumbnail_fov(rgb, detection)
    return None if small is None else _to_input_mask(small, rgb.shape[:2])


def _thumbnail_fov(rgb: np.ndarray, d: Detection) -> np.ndarray | None:
    """The FOV on the thumbnail (uint8 0/1), or None without a border."""
    value = _value_thumbnail(rgb, d.work_side)
    if not _looks_vignetted(value, d.corner_fraction, d.dark_corner_level, d.min_dark_corners, d.min_contrast):
        return None
    fov = _field_of_view(value, d.threshold_range)
    if fov is None:
        logger.debug("corners are dark but no field of view was found; leaving the image as is")
    return fov


def _to_input_mask(small: np.ndarray, full_shape: tuple[int, ...]) -> np.ndarray:
    """The thumbnail FOV scaled to the input: bilinear, then at least half covered (smooth, not blocky, edges)."""
    h, w = full_shape[:2]
    return cv2.resize(small.astype(np.float32), (w, h), interpolation=cv2.INTER_LINEAR) >= 0.5


def _bounding_box(mask: np.ndarray) -> tuple[int, int, int, int]:
    """Half-open ``(x0, y0, x1, y1)`` of the True pixels (the FOV is never empty here)."""
    ys, xs = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    return int(xs[0]), int(ys[0]), int(xs[-1]) + 1, int(ys[-1]) + 1


def _fill_outside(crop: np.ndarray, inside: np.ndarray) -> np.ndarray:
    """``crop`` with the pixels outside the FOV set to the mean colour inside it."""
    out = crop.copy()
    out[~inside] = np.round(crop[inside].reshape(-1, 3).mean(axis=0)).astype(np.uint8)
    return out


def _value_thumbnail(rgb: np.ndarray, work_side: int) -> np.ndarray:
    """max(R, G, B) on a thumbnail: dark only where every channel is dark, as in the vignette."""
    h, w = rgb.shape[:2]
    scale = min(1.0, work_side / max(h, w))
    small = rgb if scale == 1.0 else cv2.resize(
        rgb, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA
    )
    return small.max(axis=2)


def _looks_vignetted(
    value: np.ndarray, corner_fraction: float, dark_level: float, min_dark: int, min_contrast: float
) -> bool:
    h, w = value.shape
    c = max(1, round(corner_fraction * min(h, w)))
    corners = np.array([value[:c, :c].mean(), value[:c, -c:].mean(), value[-c:, :c].mean(), value[-c:, -c:].mean()])
    dark = corners < dark_level
    if dark.sum() < min_dark:
        return False
    centre = np.median(value[h // 4 : h - h // 4, w // 4 : w - w // 4])
    return bool(centre >= corners[dark].mean() + min_contrast)


def _field_of_view(value: np.ndarray, threshold_range: tuple[int, int]) -> np.ndarray | None:
    """Filled, slightly eroded convex FOV mask (uint8 0/1) of the thumbnail, or None."""
    otsu, _ = cv2.threshold(value, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    threshold = float(np.clip(otsu, *threshold_range))
    mask = (value > threshold).astype(np.uint8)
    side = min(value.shape)
    mask = cv2.morphologyEx(mask, cv2.MORPH_OPEN, _disk(max(3, side // 64)))
    # Closed inside a black margin: at the frame's edge OpenCV would count the outside as FOV and bridge
    # the thin black wedges where a round FOV meets the frame (left black inside the crop or the fill).
    close = _disk(max(3, side // 16))
    margin = close.shape[0]
    mask = cv2.copyMakeBorder(mask, margin, margin, margin, margin, cv2.BORDER_CONSTANT, value=0)
    mask = cv2.morphologyEx(mask, cv2.MORPH_CLOSE, close)[margin:-margin, margin:-margin]
    contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    if not contours:
        return None
    hull = cv2.convexHull(max(contours, key=cv2.contourArea))
    fov = np.zeros_like(mask)
    cv2.fillPoly(fov, [hull], 1)
    # One thumbnail pixel of margin absorbs the rounding when scaling back up.
    fov = cv2.erode(fov, np.ones((3, 3), np.uint8))
    if fov.sum() < 0.05 * fov.size:
        return None
    return fov


def _disk(size: int) -> np.ndarray:
    size |= 1  # odd, so the kernel has a centre
    return cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (size, size))


def _largest_inscribed_rect(mask: np.ndarray) -> tuple[int, int, int, int]:
    """Largest-area axis-aligned rectangle inside a mask whose rows are single runs.

    For every pair of rows (top i, bottom j) the usable columns are
    [max(left[i..j]), min(right[i..j])]; running max/min along j gives them all
    at once, O(rows^2) on the thumbnail.
    """
    ys = np.flatnonzero(mask.any(axis=1))
    rows = mask[ys].astype(bool)
    left = rows.argmax(axis=1)
    right = rows.shape[1] - 1 - rows[:, ::-1].argmax(axis=1)
    n = len(ys)
    below = np.arange(n)[None, :] >= np.arange(n)[:, None]  # j >= i
    # Sentinels outside the column range make the j < i half drop out of the running max/min.
    lo = np.maximum.accumulate(np.where(below, left[None, :], -1), axis=1)
    hi = np.minimum.accumulate(np.where(below, right[None, :], rows.shape[1]), axis=1)
    width = np.where(below, hi - lo + 1, 0).clip(min=0)
    height = ys[None, :] - ys[:, None] + 1
    i, j = np.unravel_index(np.argmax(width * height), width.shape)
    return int(lo[i, j]), int(ys[i]), int(hi[i, j]) + 1, int(ys[j]) + 1


def _to_input_pixels(
    box: tuple[int, int, int, int], small_shape: tuple[int, int], full_shape: tuple[int, int]
) -> tuple[int, int, int, int]:
    """Scale a half-open thumbnail box up, rounding inwards so it stays inside the FOV."""
    sy, sx = full_shape[0] / small_shape[0], full_shape[1] / small_shape[1]
    x0, y0, x1, y1 = box
    return (
        int(np.ceil(x0 * sx)),
        int(np.ceil(y0 * sy)),
        min(full_shape[1], int(np.floor(x1 * sx))),
        min(full_shape[0], int(np.floor(y1 * sy))),
    )
