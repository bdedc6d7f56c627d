"""What the patient's skin, the dermoscope and the clinic add around a lesion.

Everything here is independent of the diagnosis: the skin field, lighting,
hair, ruler marks, ink markers and the black circular vignette of a contact
dermoscope.  Images are float32 RGB arrays in [0, 1] of shape (S, S, 3); every
function draws its randomness from the ``rng`` it is given, so an image is a
pure function of its seed.
"""

from __future__ import annotations

from functools import lru_cache

import cv2
import numpy as np

LIGHTINGS: tuple[str, ...] = ("even", "warm", "cool", "dim")
SKIN_TONES: tuple[str, ...] = ("light", "medium", "tan", "dark")

_SKIN_RGB = {
    "light": (0.94, 0.79, 0.75),
    "medium": (0.89, 0.71, 0.61),
    "tan": (0.79, 0.59, 0.46),
    "dark": (0.60, 0.42, 0.32),
}
# Per-channel gain of each lighting condition (colour cast and brightness).
_LIGHT_GAIN = {
    "even": (1.0, 1.0, 1.0),
    "warm": (1.06, 0.96, 0.80),
    "cool": (0.86, 0.96, 1.10),
    "dim": (0.70, 0.68, 0.68),
}
# Erythema and pigment change red less than green/blue: mottling tints, not just darkens.
_MOTTLE_RGB = np.array([0.018, 0.035, 0.032], np.float32)
_INKS = ((0.36, 0.20, 0.56), (0.20, 0.26, 0.62), (0.48, 0.16, 0.52))
_CURVE_T = np.linspace(0.0, 1.0, 24)[:, None]
_SUBPIXEL = 2  # cv2 drawing "shift": coordinates carry 2 fractional bits


@lru_cache(maxsize=8)
def centred_grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel x and y relative to the image centre (cached, read-only)."""
    centre = (size - 1) / 2.0
    y, x = np.mgrid[0:size, 0:size].astype(np.float32) - np.float32(centre)
    x.flags.writeable = False
    y.flags.writeable = False
    return x, y


def smooth_noise(rng: np.random.Generator, size: int, cells: int, channels: int | None = None) -> np.ndarray:
    """Band-limited noise: a random ``cells`` x ``cells`` grid upsampled to ``size`` (cubic)."""
    shape = (cells, cells) if channels is None else (cells, cells, channels)
    grid = rng.standard_normal(shape).astype(np.float32)
    return cv2.resize(grid, (size, size), interpolation=cv2.INTER_CUBIC)


def _paint(img: np.ndarray, mask: np.ndarray, colour, opacity: float) -> np.ndarray:
    """Lay ``colour`` over ``img`` where the uint8 ``mask`` is set."""
    weight = mask.astype(np.float32) * np.float32(opacity / 255.0)
    return img + (np.asarray(colour, np.float32) - img) * weight[..., None]


def _px(rng: np.random.Generator, size: int, low: float, high: float) -> int:
    """A stroke width in pixels, scaled from a 256 px reference and never below 1."""
    return max(1, int(round(rng.uniform(low, high) * size / 256.0)))


def skin_field(size: int, tone: str, rng: np.random.Generator) -> np.ndarray:
    """Skin under contact dermoscopy: a tone, a slow illumination gradient, mottling and grain."""
    x, y = centred_grid(size)
    half = size / 2.0
    base = np.asarray(_SKIN_RGB[tone], np.float32) * rng.uniform(0.93, 1.05, 3).astype(np.float32)
    gx, gy = rng.normal(0.0, 0.08, 2)
    light = 1.0 + (np.float32(gx) * x + np.float32(gy) * y) / half - 0.1 * (x * x + y * y) / (half * half)
    mottle = smooth_noise(rng, size, int(rng.integers(3, 7)))[..., None] * _MOTTLE_RGB
    grain = 0.02 * smooth_noise(rng, size, max(8, size // 5))[..., None]
    return (base * light[..., None] + mottle + grain).astype(np.float32)


def _hair_curve(rng: np.random.Generator, size: int) -> np.ndarray:
    """A gently bent hair as a quadratic Bezier polyline (sub-pixel int32 points)."""
    start = rng.uniform(-0.1, 1.1, 2) * size
    angle = rng.uniform(0.0, 2.0 * np.pi)
    length = rng.uniform(0.3, 1.0) * size
    chord = np.array([np.cos(angle), np.sin(angle)]) * length
    control = start + chord / 2 + rng.normal(0.0, 0.15, 2) * length
    t = _CURVE_T
    pts = (1 - t) ** 2 * start + 2 * (1 - t) * t * control + t**2 * (start + chord)
    return np.round(pts * (1 << _SUBPIXEL)).astype(np.int32)


def add_hair(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Dark thin curved hairs crossing the field."""
    size = img.shape[0]
    mask = np.zeros((size, size), np.uint8)
    for _ in range(int(rng.integers(2, 18))):
        width = _px(rng, size, 0.8, 2.4)
        cv2.polylines(mask, [_hair_curve(rng, size)], False, 255, width, cv2.LINE_AA, _SUBPIXEL)
    colour = rng.uniform((0.04, 0.03, 0.02), (0.28, 0.2, 0.14))
    return _paint(img, mask, colour, rng.uniform(0.75, 0.95))


def _ruler_segments(rng: np.random.Generator, size: int) -> list[np.ndarray]:
    """Baseline and tick marks of a ruler along the top edge (every 5th tick long)."""
    inset = rng.uniform(0.04, 0.12) * size
    start = rng.uniform(0.05, 0.35) * size
    ticks = start + np.arange(0.0, rng.uniform(0.4, 0.75) * size, max(2.0, rng.uniform(0.025, 0.04) * size))
    long_tick = np.arange(len(ticks)) % 5 == 0
    ends = inset + np.where(long_tick, 0.06, 0.03) * size
    segments = [np.array([[ticks[0], inset], [ticks[-1], inset]])]
    segments += [np.array([[t, inset], [t, e]]) for t, e in zip(ticks, ends)]
    return segments


def add_ruler(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A strip of ruler tick marks near a random edge, slightly tilted."""
    size = img.shape[0]
    angle = int(rng.integers(4)) * 90.0 + np.degrees(rng.normal(0.0, 0.06))
    rot = cv2.getRotationMatrix2D(((size - 1) / 2.0, (size - 1) / 2.0), angle, 1.0)
    mask = np.zeros((size, size), np.uint8)
    width = _px(rng, size, 0.8, 1.8)
    for seg in _ruler_segments(rng, size):
        pts = seg @ rot[:, :2].T + rot[:, 2]
        pts = np.round(pts * (1 << _SUBPIXEL)).astype(np.int32)
        cv2.polylines(mask, [pts], False, 255, width, cv2.LINE_AA, _SUBPIXEL)
    colour = rng.uniform(0.02, 0.15, 3)
    return _paint(img, mask, colour, rng.uniform(0.8, 0.95))


def add_marker(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Surgical ink: purple/blue dots or a stroke around the lesion, slightly bled."""
    size = img.shape[0]
    mask = np.zeros((size, size), np.uint8)
    ring = rng.uniform(0.28, 0.42) * size
    centre = np.array([(size - 1) / 2.0] * 2)
    if rng.random() < 0.5:
        for a in rng.uniform(0.0, 2.0 * np.pi, int(rng.integers(2, 7))):
            x, y = centre + ring * np.array([np.cos(a), np.sin(a)])
            cv2.circle(mask, (int(x), int(y)), _px(rng, size, 2.5, 6.0), 255, -1, cv2.LINE_AA)
    else:
        start = rng.uniform(0.0, 360.0)
        axes = (int(ring), int(ring * rng.uniform(0.8, 1.2)))
        centre_px = (int(centre[0]), int(centre[1]))
        cv2.ellipse(mask, centre_px, axes, 0.0, start, start + rng.uniform(25, 90), 255, _px(rng, size, 2, 5), cv2.LINE_AA)
    mask = cv2.GaussianBlur(mask, (0, 0), max(0.5, size / 256.0))
    return _paint(img, mask, _INKS[int(rng.integers(len(_INKS)))], rng.uniform(0.65, 0.9))


def apply_lighting(img: np.ndarray, kind: str, rng: np.random.Generator) -> np.ndarray:
    """Colour cast and brightness of the light source, with a little per-image jitter."""
    gain = np.asarray(_LIGHT_GAIN[kind], np.float32) * np.float32(rng.uniform(0.96, 1.04))
    return img * gain


def apply_vignette(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Contact dermoscope field stop: black outside a circle, soft edge, darkening towards it."""
    size = img.shape[0]
    x, y = centred_grid(size)
    cx, cy = rng.normal(0.0, 0.01 * size, 2)
    radius = rng.uniform(0.45, 0.5) * size
    soft = rng.uniform(0.02, 0.05) * size
    dist = np.hypot(x - np.float32(cx), y - np.float32(cy))
    inside = np.clip((radius - dist) / soft, 0.0, 1.0)
    inside = inside * inside * (3 - 2 * inside) * (1 - 0.25 * (dist / radius) ** 4)
    floor = np.float32(rng.uniform(0.0, 0.04))  # the scope's black is never quite 0
    return img * inside[..., None] + floor * (1 - inside[..., None])


def to_uint8(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Add sensor noise and quantise to uint8 RGB."""
    noise = rng.standard_normal((*img.shape[:2], 1), dtype=np.float32) * np.float32(0.008)
    return np.clip((img + noise) * 255.0 + 0.5, 0, 255).astype(np.uint8)


def apply_acquisition(
    img: np.ndarray,
    rng: np.random.Generator,
    *,
    hair: bool,
    ruler: bool,
    marker: bool,
    lighting: str,
    border: bool,
) -> np.ndarray:
    """All acquisition effects in physical order, returning the final uint8 RGB image."""
    if hair:
        img = add_hair(img, rng)
    if marker:
        img = add_marker(img, rng)
    if ruler:
        img = add_ruler(img, rng)
    img = apply_lighting(img, lighting, rng)
    if border:
        img = apply_vignette(img, rng)
    return to_uint8(img, rng)
