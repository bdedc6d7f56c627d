"""Seeded, vectorised batch augmentation on the training worker: geometry and colour jitter.

Works on float ``N x 3 x H x W`` batches in [0, 1] (before ImageNet
normalisation) on whatever device the batch is on. Every per-image parameter
comes from ONE uniform draw on CPU, one fixed column per parameter, so a seed
gives the same flips and crops whatever else is switched on. The geometry
(random resized crop, rotation, flips) is one affine matrix per image applied by
a single ``grid_sample`` over the batch; flips alone stay cheap index ops.
Colour jitter is elementwise maths with one factor, or one 3x3 matrix, per image.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torchvision.transforms.v2.functional import rgb_to_grayscale

from skin_core.config import AugmentConfig

logger = logging.getLogger(__name__)

# the columns of the one uniform draw
_FLIP_H, _FLIP_V, _TURN, _AREA, _RATIO, _CX, _CY, _ANGLE, _BRIGHTNESS, _CONTRAST, _SATURATION, _HUE = range(12)
_DRAWS = 12

# RGB -> YIQ (NTSC): Y is luma, (I, Q) the chroma plane; each chroma row sums to 0, so grey has no chroma
_RGB_TO_YIQ = torch.tensor([[0.299, 0.587, 0.114],
                            [0.596, -0.274, -0.322],
                            [0.211, -0.523, 0.312]], dtype=torch.float64)
_YIQ_TO_RGB = torch.linalg.inv(_RGB_TO_YIQ)


@dataclass(frozen=True)
class AugmentParams:
    """Per-image parameters of a batch of N, as CPU tensors of length N (float64 unless said).

    ``flip_h``, ``flip_v``, ``turn`` (bool): mirror left-right, top-bottom, swap the axes (square images only).
    ``crop_size`` (N x 2): crop width and height as fractions of the image width and height.
    ``crop_center`` (N x 2): crop centre (x, y) in ``grid_sample``'s normalised coordinates [-1, 1].
    ``angle``: rotation in radians; positive turns the content counter-clockwise on screen.
    ``brightness``, ``contrast``, ``saturation``: jitter factors, 1 leaves the image as it is.
    ``hue``: hue shift as a fraction of a full turn.
    """

    flip_h: torch.Tensor
    flip_v: torch.Tensor
    turn: torch.Tensor
    crop_size: torch.Tensor
    crop_center: torch.Tensor
    angle: torch.Tensor
    brightness: torch.Tensor
    contrast: torch.Tensor
    saturation: torch.Tensor
    hue: torch.Tensor


def augment_batch(x: torch.Tensor, config: AugmentConfig, generator: torch.Generator | None = None) -> torch.Tensor:
    """``x`` (float N x 3 x H x W in [0, 1]) augmented per image as ``config`` asks, on ``x``'s device.

    Parameters are drawn from ``generator`` (a CPU generator; ``None`` is torch's
    global one), so one seed gives one output. Nothing enabled returns ``x`` itself.
    """
    _check_batch(x)
    height, width = x.shape[-2:]
    return apply_params(x, draw_params(x.shape[0], height, width, config, generator), config)


def draw_params(n: int, height: int, width: int, config: AugmentConfig,
                generator: torch.Generator | None = None) -> AugmentParams:
    """All per-image parameters of a batch from one ``torch.rand(n, 12)`` call on CPU.

    The random resized crop follows torchvision's ``RandomResizedCrop``: area
    fraction ``a ~ U(crop_scale)``, aspect ``r = w/h`` log-uniform in
    ``crop_ratio``, so in pixels ``w = sqrt(a H W r)``, ``h = sqrt(a H W / r)``,
    and a centre uniform over the positions that keep the crop inside. Where the
    drawn aspect does not fit at the drawn area, it is clamped to the nearest one
    that does (``a W/H <= r <= W/(a H)``; torchvision redraws up to ten times
    instead), so ``crop_scale = (1, 1)`` is always the whole image.
    """
    u = torch.rand((n, _DRAWS), generator=generator, dtype=torch.float64)
    flip = (u[:, [_FLIP_H, _FLIP_V, _TURN]] < 0.5) & config.flips
    area = _uniform(u[:, _AREA], *config.crop_scale)
    log_ratio = _uniform(u[:, _RATIO], math.log(config.crop_ratio[0]), math.log(config.crop_ratio[1]))
    ratio = torch.minimum(torch.maximum(log_ratio.exp(), area * width / height), width / (area * height))
    size = torch.stack([(area * ratio * height / width).sqrt(), (area / ratio * width / height).sqrt()], 1)
    size = size.clamp(max=1.0)  # rounding only: the clamped ratio already fits
    return AugmentParams(
        flip_h=flip[:, 0], flip_v=flip[:, 1], turn=flip[:, 2] & (height == width),
        crop_size=size, crop_center=(2 * u[:, [_CX, _CY]] - 1) * (1 - size),
        angle=math.radians(config.rotation) * (2 * u[:, _ANGLE] - 1),
        brightness=_factor(u[:, _BRIGHTNESS], config.brightness),
        contrast=_factor(u[:, _CONTRAST], config.contrast),
        saturation=_factor(u[:, _SATURATION], config.saturation),
        hue=config.hue * (2 * u[:, _HUE] - 1),
    )


def apply_params(x: torch.Tensor, params: AugmentParams, config: AugmentConfig) -> torch.Tensor:
    """Geometry, then colour jitter, of ``x`` with the given per-image ``params``.

    ``config`` only says which stages run, so disabled ones cost nothing: without
    crop or rotation the flips are index ops and no ``grid_sample`` runs.
    """
    _check_batch(x)
    if tuple(config.crop_scale) != (1.0, 1.0) or config.rotation > 0:
        x = _warp(x, affine_matrices(params, *x.shape[-2:]))
    elif config.flips:
        x = _flip(x, params)
    if config.brightness or config.contrast or config.saturation or config.hue:
        x = _jitter_colour(x, params, config)
    return x


def affine_matrices(params: AugmentParams, height: int, width: int) -> torch.Tensor:
    """``N x 2 x 3`` matrices for ``F.affine_grid`` (output -> input, normalised coordinates), float64 CPU.

    In pixel units (x right, y down, origin at the image centre) output point
    ``p`` samples the input at ``c + R(angle) S M p``: ``M`` the flips and turn
    (``M = diag(±1, ±1)``, times the axis swap for a turn, the composition that
    :func:`_flip`'s index ops make), ``S = diag(crop w, crop h)`` the crop scale,
    ``R`` the rotation ``[[cos, -sin], [sin, cos]]``, ``c`` the crop centre.
    Normalised units are pixel units over half the side, ``D = diag(W/2, H/2)``,
    so the linear part is ``D^-1 R S M D`` and the translation is ``c`` normalised.
    """
    n = params.angle.shape[0]
    signs = torch.stack([1 - 2 * params.flip_h.double(), 1 - 2 * params.flip_v.double()], 1)
    swap = torch.tensor([[0.0, 1.0], [1.0, 0.0]], dtype=torch.float64)
    turned = torch.where(params.turn.view(n, 1, 1), swap, torch.eye(2, dtype=torch.float64))
    flips = signs.unsqueeze(2) * turned  # diag(signs) @ turned
    cos, sin = params.angle.cos(), params.angle.sin()
    rotation = torch.stack([torch.stack([cos, -sin], 1), torch.stack([sin, cos], 1)], 1)
    half = torch.tensor([width / 2, height / 2], dtype=torch.float64)
    pixels = rotation @ (params.crop_size.unsqueeze(2) * flips)  # R S M
    linear = pixels * half.view(1, 1, 2) / half.view(1, 2, 1)  # D^-1 (R S M) D
    return torch.cat([linear, params.crop_center.unsqueeze(2)], 2)


def hue_matrices(shift: torch.Tensor) -> torch.Tensor:
    """``N x 3 x 3`` RGB -> RGB matrices turning the chroma plane by ``2 pi shift`` (float64).

    ``YIQ^-1 · rot_IQ · YIQ``: luma is kept and grey stays grey. torchvision's hue
    jitter rotates HSV hue instead; a rotation in YIQ is the linear, batchable
    equivalent (the angles agree only roughly, the effect is the same kind).
    """
    angle = 2 * math.pi * shift
    rot = torch.zeros(shift.shape[0], 3, 3, dtype=torch.float64)
    rot[:, 0, 0] = 1.0
    rot[:, 1, 1], rot[:, 1, 2] = angle.cos(), -angle.sin()
    rot[:, 2, 1], rot[:, 2, 2] = angle.sin(), angle.cos()
    return _YIQ_TO_RGB @ rot @ _RGB_TO_YIQ


def _warp(x: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    grid = F.affine_grid(theta.to(x.device, x.dtype), list(x.shape), align_corners=False)
    # reflection, not zeros: black corners would imitate the vignette that preprocessing removes
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)


def _flip(x: torch.Tensor, params: AugmentParams) -> torch.Tensor:
    """Mirror left-right, then top-bottom, then swap the axes, each where its mask says.

    Images sharing one of the 8 combinations are gathered, flipped together and
    scattered back: at most 8 index ops whatever the batch size (a per-pixel
    ``torch.where`` over the whole batch measured ~10x slower on CPU).
    """
    combination = params.flip_h.long() + 2 * params.flip_v.long() + 4 * params.turn.long()
    out = torch.empty_like(x)
    for code in combination.unique().tolist():
        index = (combination == code).nonzero().view(-1).to(x.device)
        group = x.index_select(0, index)
        group = group.flip(-1) if code & 1 else group
        group = group.flip(-2) if code & 2 else group
        out.index_copy_(0, index, group.transpose(-1, -2) if code & 4 else group)
    return out


def _jitter_colour(x: torch.Tensor, params: AugmentParams, config: AugmentConfig) -> torch.Tensor:
    """torchvision's ColorJitter maths per image, in the fixed order brightness, contrast, saturation, hue.

    brightness: ``b x``; contrast: ``c x + (1 - c) mean(grey(x))``; saturation:
    ``s x + (1 - s) grey(x)``; hue: :func:`hue_matrices`. Each result is clamped
    to [0, 1], as torchvision does after every step (in place: each result is a
    fresh tensor, never the caller's).
    """
    def per_image(values: torch.Tensor) -> torch.Tensor:
        return values.to(x.device, x.dtype).view(-1, 1, 1, 1)

    if config.brightness:
        x = (x * per_image(params.brightness)).clamp_(0, 1)
    if config.contrast:
        x = _blend(x, rgb_to_grayscale(x).mean(dim=(-3, -2, -1), keepdim=True), per_image(params.contrast))
    if config.saturation:
        x = _blend(x, rgb_to_grayscale(x), per_image(params.saturation))
    if config.hue:
        matrices = hue_matrices(params.hue).to(x.device, x.dtype)
        x = torch.einsum("nij,njhw->nihw", matrices, x).clamp_(0, 1)
    return x


def _blend(x: torch.Tensor, other: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """``factor x + (1 - factor) other`` in [0, 1] (torchvision's ``_blend``) as one fused lerp."""
    return torch.lerp(other, x, factor).clamp_(0, 1)


def _uniform(u: torch.Tensor, low: float, high: float) -> torch.Tensor:
    return low + (high - low) * u


def _factor(u: torch.Tensor, jitter: float) -> torch.Tensor:
    """A ColorJitter factor uniform in ``[max(0, 1 - jitter), 1 + jitter]``; exactly 1 when ``jitter`` is 0."""
    return _uniform(u, max(0.0, 1.0 - jitter), 1.0 + jitter)


def _check_batch(x: torch.Tensor) -> None:
    if not isinstance(x, torch.Tensor) or x.ndim != 4 or x.shape[1] != 3 or not x.is_floating_point():
        described = f"{x.dtype} tensor of shape {tuple(x.shape)}" if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"x must be a float N x 3 x H x W tensor, got a {described}")
