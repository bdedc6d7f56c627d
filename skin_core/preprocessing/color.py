"""Colour constancy: undo the colour cast of each clinic's camera and lighting.

HAM10000 images are pink-red, BCN20000 and MSK ones often yellow-white; a model
trained on one collection learns its cast as a feature and transfers badly.
Normalising every image to a neutral illuminant removes that shortcut; the
ISIC 2019 winners (Gessert et al.) apply Shades of Gray to every image.
"""

from __future__ import annotations

import logging
from typing import Callable

import numpy as np

logger = logging.getLogger(__name__)


def shades_of_gray(rgb: np.ndarray, power: float = 6.0) -> np.ndarray:
    """Shades of Gray colour constancy of a uint8 ``H x W x 3`` RGB image, as a new uint8 image.

    The illuminant is estimated per channel by the Minkowski p-norm mean of the
    pixel values, normalised to unit length, and each channel is scaled so the
    estimate becomes neutral (von Kries diagonal correction)::

        e_c   = (mean_pixels I_c ** p) ** (1 / p)        c in {R, G, B}
        ê     = e / ||e||_2
        g_c   = 1 / (sqrt(3) * ê_c)
        out_c = round(clip(g_c * I_c, 0, 255))

    A neutral illuminant (e_R = e_G = e_B, so ê_c = 1/sqrt(3)) gives g = 1 and
    leaves the image unchanged. ``p = 1`` is Grey World (Buchsbaum 1980),
    ``p -> inf`` is max-RGB (White Patch); ``p = 6`` is the value Finlayson and
    Trezzi found best and that Barata et al. and Gessert et al. use for dermoscopy.
    An all-black image (e = 0) is returned unchanged (as a copy); a channel that
    is zero everywhere stays zero.

    References: G. D. Finlayson and E. Trezzi, "Shades of Gray and Colour
    Constancy", Color and Imaging Conference (CIC 12), 2004; C. Barata,
    M. E. Celebi, J. S. Marques, "Improving dermoscopy image classification using
    color constancy", IEEE J. Biomed. Health Inform. 19(3), 2015; N. Gessert et al.,
    "Skin lesion classification using ensembles of multi-resolution EfficientNets
    with meta data", MethodsX 7, 2020.
    """
    _check_rgb(rgb)
    _check_power(power)
    pixels = rgb.reshape(-1, 3).astype(np.float64) / 255.0  # [0, 1]: p-th powers stay well inside float64
    estimate = np.mean(pixels ** power, axis=0) ** (1.0 / power)
    norm = np.linalg.norm(estimate)
    if norm == 0.0:
        logger.debug("shades_of_gray: all-black image, left unchanged")
        return rgb.copy()
    unit = estimate / norm
    # a channel that is zero everywhere has no gain to speak of; 0 * inf would be NaN
    gains = np.divide(1.0, np.sqrt(3.0) * unit, out=np.ones(3), where=unit > 0)
    corrected = rgb.astype(np.float64) * gains
    return np.rint(np.clip(corrected, 0.0, 255.0)).astype(np.uint8)


def _no_constancy(rgb: np.ndarray, power: float) -> np.ndarray:  # noqa: ARG001 - the registry's common signature
    return rgb


COLOR_CONSTANCY: dict[str, Callable[[np.ndarray, float], np.ndarray]] = {
    "none": _no_constancy,
    "shades_of_gray": shades_of_gray,
}


def apply_color_constancy(rgb: np.ndarray, method: str, power: float = 6.0) -> np.ndarray:
    """The colour-constancy ``method`` (a key of :data:`COLOR_CONSTANCY`) applied to ``rgb``.

    ``power`` is the Minkowski norm of ``shades_of_gray``; ``"none"`` returns ``rgb`` itself.
    """
    if method not in COLOR_CONSTANCY:
        raise ValueError(f"color_constancy method {method!r} is unknown; use one of {', '.join(COLOR_CONSTANCY)}")
    return COLOR_CONSTANCY[method](rgb, power)


def _check_rgb(rgb: np.ndarray) -> None:
    if (not isinstance(rgb, np.ndarray) or rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3
            or rgb.size == 0):
        described = f"{rgb.dtype} array of shape {rgb.shape}" if isinstance(rgb, np.ndarray) else type(rgb).__name__
        raise ValueError(f"rgb must be a non-empty uint8 H x W x 3 array, got a {described}")


def _check_power(power: float) -> None:
    if not np.isfinite(power) or power < 1:
        raise ValueError(f"power must be a finite number >= 1, got {power!r}")
