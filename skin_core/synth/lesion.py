"""Class appearance model: what each diagnosis looks like under the dermoscope.

A lesion is fully described by :class:`LesionParams` (drawn by
:func:`sample_lesion` from the class's :class:`ClassStyle`).  Rendering the
same parameters always gives the same RGBA layer, so several images of one
lesion differ only by pose (:func:`pose_lesion`) and acquisition effects.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import cv2
import numpy as np

from skin_core.synth.acquisition import centred_grid, smooth_noise

RGB = tuple[float, float, float]

# Reference colours (RGB in [0, 1]) of dermoscopic structures.
TAN: RGB = (0.80, 0.62, 0.46)
LIGHT_BROWN: RGB = (0.66, 0.45, 0.30)
MID_BROWN: RGB = (0.48, 0.29, 0.18)
DARK_BROWN: RGB = (0.30, 0.17, 0.10)
BLACK: RGB = (0.12, 0.09, 0.08)
BLUE_GREY: RGB = (0.40, 0.45, 0.56)
VEIL: RGB = (0.58, 0.63, 0.74)
SCAR: RGB = (0.90, 0.84, 0.84)
WAXY: RGB = (0.78, 0.66, 0.50)
PEARL: RGB = (0.95, 0.80, 0.82)
PINK: RGB = (0.91, 0.60, 0.62)
RED_PINK: RGB = (0.86, 0.44, 0.44)
LIGHT_RED: RGB = (0.86, 0.45, 0.52)
RED: RGB = (0.74, 0.17, 0.25)
PURPLE: RGB = (0.48, 0.17, 0.38)
DARK_RED: RGB = (0.40, 0.07, 0.14)
VESSEL: RGB = (0.72, 0.10, 0.16)
CRUST: RGB = (0.42, 0.16, 0.10)
WHITE: RGB = (0.96, 0.94, 0.91)
KERATIN: RGB = (0.93, 0.87, 0.70)

Range = tuple[float, float]


@dataclass(frozen=True)
class ClassStyle:
    """Ranges a class draws its lesions from; sizes are fractions of the image side."""

    radius: Range
    irregular: Range  # amplitude of the boundary's angular harmonics
    edge: Range  # width of the blurred border, as a fraction of the radius
    opacity: Range
    palettes: tuple[tuple[RGB, ...], ...]  # candidate colour ramps, rim to centre
    blotch: float  # weight of random colour patches against the radial ramp
    features: dict[str, float]  # structure name -> probability of being present
    aspect: Range = (0.72, 1.0)


STYLES: dict[str, ClassStyle] = {
    "MEL": ClassStyle(
        radius=(0.24, 0.38), irregular=(0.08, 0.16), edge=(0.05, 0.3), opacity=(0.85, 0.97),
        palettes=((LIGHT_BROWN, DARK_BROWN, BLACK), (TAN, MID_BROWN, DARK_BROWN, BLACK),
                  (LIGHT_BROWN, MID_BROWN, DARK_BROWN, BLACK)),
        blotch=0.85, features={"network": 0.4, "globules": 0.6, "veil": 0.5, "regression": 0.3}, aspect=(0.6, 0.95)),
    "NV": ClassStyle(
        radius=(0.14, 0.3), irregular=(0.01, 0.035), edge=(0.15, 0.35), opacity=(0.8, 0.95),
        palettes=((TAN, LIGHT_BROWN, MID_BROWN), (LIGHT_BROWN, MID_BROWN), (LIGHT_BROWN, MID_BROWN, DARK_BROWN)),
        blotch=0.2, features={"network": 0.6, "globules": 0.3}),
    "BCC": ClassStyle(
        radius=(0.16, 0.32), irregular=(0.04, 0.09), edge=(0.15, 0.3), opacity=(0.55, 0.8),
        palettes=((PEARL, PINK), (PINK, PEARL), (PEARL, PINK, (0.80, 0.55, 0.60))),
        blotch=0.5, features={"vessels": 0.9, "nests": 0.6, "ulcer": 0.3}),
    "AK": ClassStyle(
        radius=(0.2, 0.38), irregular=(0.05, 0.1), edge=(0.4, 0.7), opacity=(0.4, 0.6),
        palettes=((PINK, RED_PINK), (RED_PINK, (0.80, 0.50, 0.45))),
        blotch=0.5, features={"scale": 0.8, "follicles": 0.5}, aspect=(0.6, 0.95)),
    "BKL": ClassStyle(
        radius=(0.18, 0.34), irregular=(0.04, 0.1), edge=(0.04, 0.12), opacity=(0.75, 0.9),
        palettes=((TAN, LIGHT_BROWN), (LIGHT_BROWN, TAN, MID_BROWN), (WAXY, TAN)),
        blotch=0.5, features={"cerebriform": 0.6, "milia": 0.5, "comedo": 0.4, "scale": 0.2}, aspect=(0.6, 0.95)),
    "DF": ClassStyle(
        radius=(0.12, 0.2), irregular=(0.03, 0.07), edge=(0.35, 0.6), opacity=(0.55, 0.8),
        palettes=((LIGHT_BROWN, TAN), (MID_BROWN, LIGHT_BROWN)),
        blotch=0.3, features={"pale_centre": 1.0, "network": 0.5}),
    "VASC": ClassStyle(
        radius=(0.12, 0.25), irregular=(0.02, 0.06), edge=(0.05, 0.15), opacity=(0.85, 0.97),
        palettes=((LIGHT_RED, RED), (RED, PURPLE), (LIGHT_RED, PURPLE)),
        blotch=0.4, features={"lacunae": 1.0}),
    "SCC": ClassStyle(
        radius=(0.16, 0.32), irregular=(0.05, 0.1), edge=(0.1, 0.3), opacity=(0.6, 0.8),
        palettes=((PINK, RED_PINK), (RED_PINK, PINK)),
        blotch=0.5, features={"keratin": 0.9, "dotted_vessels": 0.7, "ulcer": 0.3, "scale": 0.4}),
}

# Dysplastic nevi and featureless melanomas: some lesions borrow the other class's
# shape and colours (keeping their own structures), which is what confuses MEL and NV.
_LOOKALIKE: dict[str, tuple[str, float]] = {"NV": ("MEL", 0.15), "MEL": ("NV", 0.2)}
_HARMONICS = range(2, 9)


@dataclass(frozen=True)
class LesionParams:
    """Everything needed to redraw one lesion identically."""

    label: str
    radius: float
    aspect: float
    harmonics: tuple[tuple[float, float], ...]  # (amplitude, phase) for k = 2, 3, ...
    edge: float
    opacity: float
    palette: tuple[RGB, ...]
    blotch: float
    features: tuple[str, ...]
    atypical: bool
    seed: int


def _draw(rng: np.random.Generator, bounds: Range) -> float:
    return float(rng.uniform(*bounds))


def _jitter(palette: tuple[RGB, ...], rng: np.random.Generator) -> tuple[RGB, ...]:
    """Per-lesion colour variation of a ramp."""
    arr = np.clip(np.asarray(palette) * rng.uniform(0.9, 1.1, (len(palette), 3)), 0.0, 1.0)
    return tuple(tuple(float(c) for c in row) for row in arr)


def sample_lesion(label: str, rng: np.random.Generator) -> LesionParams:
    """Draw one lesion of class ``label``."""
    if label not in STYLES:
        raise ValueError(f"unknown class {label!r}; expected one of {sorted(STYLES)}")
    other, rate = _LOOKALIKE.get(label, (label, 0.0))
    atypical = bool(rng.random() < rate)
    own, look = STYLES[label], STYLES[other if atypical else label]
    irregular = _draw(rng, look.irregular)
    harmonics = tuple(
        (irregular * float(rng.uniform(0.3, 1.0)) / k**0.5, float(rng.uniform(0, 2 * np.pi))) for k in _HARMONICS
    )
    return LesionParams(
        label=label, radius=_draw(rng, look.radius), aspect=_draw(rng, look.aspect), harmonics=harmonics,
        edge=_draw(rng, look.edge), opacity=_draw(rng, own.opacity),
        palette=_jitter(look.palettes[int(rng.integers(len(look.palettes)))], rng), blotch=look.blotch,
        features=tuple(name for name, p in own.features.items() if rng.random() < p),
        atypical=atypical, seed=int(rng.integers(2**63)),
    )


def _normalised_radius(params: LesionParams, size: int, rng: np.random.Generator) -> np.ndarray:
    """Distance from the lesion centre in units of the (irregular) boundary: 1 on the border."""
    x, y = centred_grid(size)
    ys = y / np.float32(params.aspect)
    theta = np.arctan2(ys, x)
    boundary = np.ones_like(theta)
    for k, (amp, phase) in zip(_HARMONICS, params.harmonics):
        boundary += np.float32(amp) * np.cos(k * theta + np.float32(phase))
    boundary = np.maximum(boundary, 0.4) * (1.0 + 0.03 * smooth_noise(rng, size, max(8, size // 12)))  # fine ragging
    return np.hypot(x, ys) / (np.float32(params.radius * size) * boundary)


def _base_colour(params: LesionParams, u: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Colour ramp from rim to centre, broken up by random patches (multi-colour when blotchy)."""
    size = u.shape[0]
    patches = smooth_noise(rng, size, int(rng.integers(3, 7)))
    t = (1 - params.blotch) * np.clip(1.0 - u, 0.0, 1.0) + params.blotch * np.clip(0.5 + 0.6 * patches, 0.0, 1.0)
    stops = np.linspace(0.0, 1.0, len(params.palette))
    ramp = np.asarray(params.palette, np.float32)
    rgb = np.stack([np.interp(t, stops, ramp[:, c]) for c in range(3)], axis=-1).astype(np.float32)
    rgb *= (1.0 + 0.05 * smooth_noise(rng, size, max(8, size // 6)))[..., None]
    return rgb


def render_lesion(params: LesionParams, size: int) -> np.ndarray:
    """The lesion centred on a ``size`` x ``size`` float32 RGBA layer (alpha 0 off the lesion)."""
    rng = np.random.default_rng(params.seed)
    u = _normalised_radius(params, size, rng)
    ramp = np.clip((1.0 - u) / np.float32(params.edge) + 0.5, 0.0, 1.0)
    alpha = np.float32(params.opacity) * ramp * ramp * (3 - 2 * ramp)
    rgb = _base_colour(params, u, rng)
    for name in params.features:
        FEATURES[name](rgb, alpha, u, rng)
    return np.dstack([rgb, alpha])


def pose_lesion(layer: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The centred RGBA lesion layer under a random pose: mirror, rotation, scale and shift.

    Its alpha channel is where the lesion lies in the image, so the lesion mask
    is taken from it.
    """
    size = layer.shape[0]
    if rng.random() < 0.5:
        layer = np.ascontiguousarray(layer[:, ::-1])
    centre = ((size - 1) / 2.0, (size - 1) / 2.0)
    pose = cv2.getRotationMatrix2D(centre, rng.uniform(0.0, 360.0), rng.uniform(0.9, 1.1))
    pose[:, 2] += np.clip(rng.normal(0.0, 0.05 * size, 2), -0.1 * size, 0.1 * size)
    return cv2.warpAffine(layer, pose, (size, size), flags=cv2.INTER_LINEAR, borderValue=0)


def composite(img: np.ndarray, posed: np.ndarray) -> np.ndarray:
    """Lay a posed RGBA lesion layer over the skin ``img``."""
    size = img.shape[0]
    # Pigment on darker skin looks darker: scale the lesion colour by the local skin level.
    skin_level = np.clip(img[size // 4 : -size // 4, size // 4 : -size // 4].mean() / 0.75, 0.6, 1.05)
    alpha = posed[..., 3:]
    return img * (1 - alpha) + posed[..., :3] * np.float32(skin_level) * alpha



# --- dermoscopic structures: each modifies the lesion's rgb and alpha in place -----------


def _blend(rgb: np.ndarray, weight: np.ndarray, colour: RGB) -> None:
    rgb += (np.asarray(colour, np.float32) - rgb) * weight[..., None]


def _spots(u: np.ndarray, rng: np.random.Generator, count: int, radius: Range, u_max: float, ovalness: float = 1.0):
    """Float mask of ``count`` filled ovals (radius as a fraction of the side) centred where u < u_max."""
    size = u.shape[0]
    mask = np.zeros(u.shape, np.uint8)
    ys, xs = np.nonzero(u < u_max)
    if len(xs) == 0:
        return mask.astype(np.float32)
    for i in rng.integers(len(xs), size=count):
        a = max(1, int(round(rng.uniform(*radius) * size)))
        b = max(1, int(round(a * rng.uniform(ovalness, 1.0))))
        cv2.ellipse(mask, (int(xs[i]), int(ys[i])), (a, b), rng.uniform(0, 180), 0, 360, 255, -1, cv2.LINE_AA)
    return mask.astype(np.float32) / 255.0


def _walk(rng: np.random.Generator, start: np.ndarray, length: float) -> np.ndarray:
    """A wandering polyline (sub-pixel int32 points), the skeleton of a vessel."""
    steps = 10
    heading = rng.uniform(0.0, 2 * np.pi) + np.cumsum(rng.normal(0.0, 0.5, steps))
    moves = np.stack([np.cos(heading), np.sin(heading)], axis=1) * (length / steps)
    pts = np.vstack([start, start + np.cumsum(moves, axis=0)])
    return np.round(pts * 4).astype(np.int32)


def _network(rgb, alpha, u, rng) -> None:
    """Reticular pigment network: dark lines where a noise field crosses zero, fading at the rim."""
    size = u.shape[0]
    lines = np.clip(1.0 - 4.0 * np.abs(smooth_noise(rng, size, max(5, size // 14))), 0.0, 1.0)
    _blend(rgb, 0.5 * lines * np.clip(1.2 - u, 0.0, 1.0), DARK_BROWN)


def _globules(rgb, alpha, u, rng) -> None:
    _blend(rgb, 0.85 * _spots(u, rng, int(rng.integers(5, 25)), (0.007, 0.016), 0.95), DARK_BROWN)


def _veil(rgb, alpha, u, rng) -> None:
    """Blue-white veil: a structureless blue-grey haze over part of the lesion."""
    size = u.shape[0]
    x, y = centred_grid(size)
    cx, cy = rng.normal(0.0, 0.08 * size, 2)
    sigma = rng.uniform(0.07, 0.14) * size
    haze = np.exp(-((x - cx) ** 2 + (y - cy) ** 2) / np.float32(2 * sigma * sigma))
    _blend(rgb, 0.6 * haze * (u < 1.0), VEIL)


def _regression(rgb, alpha, u, rng) -> None:
    """Regression: whitish scar-like areas inside the lesion."""
    scar = np.clip(1.2 * smooth_noise(rng, u.shape[0], 5) - 0.8, 0.0, 0.5)
    _blend(rgb, scar * (u < 0.9), SCAR)


def _vessels(rgb, alpha, u, rng) -> None:
    """Arborising vessels: sharp red branching lines (BCC)."""
    size = u.shape[0]
    mask = np.zeros(u.shape, np.uint8)
    ys, xs = np.nonzero(u < 0.85)
    width = max(1, round(size / 180))
    for i in rng.integers(len(xs), size=int(rng.integers(3, 7))):
        trunk = _walk(rng, np.array([xs[i], ys[i]], float), rng.uniform(0.12, 0.25) * size)
        fork = _walk(rng, trunk[int(rng.integers(len(trunk)))] / 4.0, rng.uniform(0.05, 0.12) * size)
        cv2.polylines(mask, [trunk], False, 255, width, cv2.LINE_AA, 2)
        cv2.polylines(mask, [fork], False, 255, max(1, width - 1), cv2.LINE_AA, 2)
    weight = 0.9 * (mask.astype(np.float32) / 255.0) * (u < 1.05)
    _blend(rgb, weight, VESSEL)
    np.maximum(alpha, weight, out=alpha)


def _nests(rgb, alpha, u, rng) -> None:
    """Blue-grey ovoid nests (BCC)."""
    nests = _spots(u, rng, int(rng.integers(2, 6)), (0.015, 0.045), 0.75, ovalness=0.4)
    _blend(rgb, 0.75 * nests, BLUE_GREY)
    np.maximum(alpha, 0.8 * nests, out=alpha)


def _ulcer(rgb, alpha, u, rng) -> None:
    """Ulceration: an irregular dark red-brown crust near the centre."""
    crust = 0.85 * np.clip(3.0 * (0.35 - u) + 0.7 * smooth_noise(rng, u.shape[0], 6), 0.0, 1.0)
    _blend(rgb, crust, CRUST)
    np.maximum(alpha, crust, out=alpha)


def _scale(rgb, alpha, u, rng) -> None:
    """Keratin scale: scattered white flakes."""
    size = u.shape[0]
    flakes = np.clip(2.5 * smooth_noise(rng, size, max(8, size // 6)) - 1.5, 0.0, 0.7) * (u < 1.0)
    _blend(rgb, flakes, WHITE)
    np.maximum(alpha, flakes, out=alpha)


def _follicles(rgb, alpha, u, rng) -> None:
    """Strawberry pattern of AK: white follicular openings on the red background."""
    _blend(rgb, 0.8 * _spots(u, rng, int(rng.integers(15, 50)), (0.005, 0.011), 1.0), WHITE)


def _cerebriform(rgb, alpha, u, rng) -> None:
    """Brain-like ridges and furrows of seborrhoeic keratosis."""
    size = u.shape[0]
    x, y = centred_grid(size)
    angle = rng.uniform(0.0, np.pi)
    period = rng.uniform(0.05, 0.09) * size
    phase = (x * np.cos(angle) + y * np.sin(angle)) * np.float32(2 * np.pi / period)
    ridges = 0.5 + 0.5 * np.sin(phase + 6.0 * smooth_noise(rng, size, 8))
    rgb *= (1.0 - 0.16 * ridges * (u < 1.0))[..., None]


def _milia(rgb, alpha, u, rng) -> None:
    """Milia-like cysts: small bright yellow-white dots."""
    _blend(rgb, 0.8 * _spots(u, rng, int(rng.integers(3, 12)), (0.007, 0.014), 0.9), KERATIN)


def _comedo(rgb, alpha, u, rng) -> None:
    """Comedo-like openings: small dark brown plugs."""
    _blend(rgb, 0.8 * _spots(u, rng, int(rng.integers(3, 10)), (0.007, 0.014), 0.9), DARK_BROWN)


def _pale_centre(rgb, alpha, u, rng) -> None:
    """Central white scar-like patch of dermatofibroma."""
    patch = np.clip(3.0 * (0.4 - u) + 0.8 * smooth_noise(rng, u.shape[0], 7), 0.0, 1.0)
    _blend(rgb, 0.85 * patch, SCAR)


def _lacunae(rgb, alpha, u, rng) -> None:
    """Red-purple lacunae separated by paler septa (vascular lesions)."""
    colour = (DARK_RED, PURPLE, (0.62, 0.12, 0.22))[int(rng.integers(3))]
    _blend(rgb, 0.9 * _spots(u, rng, int(rng.integers(8, 30)), (0.012, 0.03), 0.85, ovalness=0.6), colour)


def _keratin(rgb, alpha, u, rng) -> None:
    """Central keratin mass of SCC: opaque yellow-white."""
    mass = np.clip(4.0 * (0.55 - u) + smooth_noise(rng, u.shape[0], 7), 0.0, 1.0)
    _blend(rgb, 0.9 * mass, KERATIN)
    np.maximum(alpha, 0.95 * mass, out=alpha)


def _dotted_vessels(rgb, alpha, u, rng) -> None:
    """Dotted/glomerular vessels: clusters of tiny red dots."""
    dots = 0.85 * _spots(u, rng, int(rng.integers(20, 60)), (0.004, 0.008), 0.95)
    _blend(rgb, dots, VESSEL)
    np.maximum(alpha, dots, out=alpha)


Feature = Callable[[np.ndarray, np.ndarray, np.ndarray, np.random.Generator], None]
FEATURES: dict[str, Feature] = {
    "network": _network, "globules": _globules, "veil": _veil, "regression": _regression,
    "vessels": _vessels, "nests": _nests, "ulcer": _ulcer, "scale": _scale, "follicles": _follicles,
    "cerebriform": _cerebriform, "milia": _milia, "comedo": _comedo, "pale_centre": _pale_centre,
    "lacunae": _lacunae, "keratin": _keratin, "dotted_vessels": _dotted_vessels,
}
