"""Vectorised batch augmentation: geometry through one affine warp, colour jitter per image, seeding."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
from torchvision.transforms.v2.functional import rgb_to_grayscale

from skin_core.config import AugmentConfig, ConfigError, from_dict
from skin_core.data.augment import AugmentParams, affine_matrices, apply_params, augment_batch, draw_params
from skin_core.data.transforms import random_flips

FULL = AugmentConfig(crop_scale=(0.5, 1.0), rotation=30.0, brightness=0.2, contrast=0.2, saturation=0.2, hue=0.05)
NOTHING = AugmentConfig(flips=False)


def seeded(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def batch(n: int = 6, h: int = 16, w: int = 16, seed: int = 0, low: float = 0.0, high: float = 1.0) -> torch.Tensor:
    return low + (high - low) * torch.rand(n, 3, h, w, generator=seeded(seed))


def identity_params(n: int, **changes: torch.Tensor) -> AugmentParams:
    no, one, zero = torch.zeros(n, dtype=torch.bool), torch.ones(n, dtype=torch.float64), torch.zeros(n, 2).double()
    params = AugmentParams(flip_h=no, flip_v=no, turn=no, crop_size=torch.ones(n, 2).double(), crop_center=zero,
                           angle=0 * one, brightness=one, contrast=one, saturation=one, hue=0 * one)
    return dataclasses.replace(params, **changes)


def dihedral(img: torch.Tensor) -> list[torch.Tensor]:
    """The 8 flips and quarter turns of a square C x H x W image."""
    turns = [torch.rot90(img, k, (-2, -1)) for k in range(4)]
    return turns + [t.flip(-1) for t in turns]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_shape_dtype_device_and_range_are_kept(dtype: torch.dtype) -> None:
    x = batch(h=16, w=24).to(dtype)
    out = augment_batch(x, FULL, seeded(0))
    assert out.shape == x.shape and out.dtype == dtype and out.device == x.device
    assert out.min() >= 0 and out.max() <= 1
    assert not torch.equal(out, x)


def test_one_seed_gives_one_output() -> None:
    x = batch()
    first, again = augment_batch(x, FULL, seeded(7)), augment_batch(x, FULL, seeded(7))
    assert torch.equal(first, again)
    assert not torch.allclose(first, augment_batch(x, FULL, seeded(8)))


def test_defaults_flip_and_turn_each_image_exactly() -> None:
    x = batch(n=32, h=8, w=8)
    out = augment_batch(x, AugmentConfig(), seeded(1))
    used = set()
    for src, dst in zip(x, out):
        matches = [i for i, candidate in enumerate(dihedral(src)) if torch.equal(candidate, dst)]
        assert matches, "an output image is not a flip/turn of its input"
        used.add(matches[0])
    assert len(used) >= 5  # all eight are drawn with probability 1/8 each; fewer than 5 in 32 is ~1e-6


def test_non_square_images_are_flipped_but_not_turned() -> None:
    x = batch(n=16, h=6, w=10)
    out = augment_batch(x, AugmentConfig(), seeded(2))
    for src, dst in zip(x, out):
        assert any(torch.equal(c, dst) for c in (src, src.flip(-1), src.flip(-2), src.flip(-1).flip(-2)))


def test_random_flips_is_the_default_augmentation() -> None:
    x = batch()
    assert torch.equal(random_flips(x, seeded(3)), augment_batch(x, AugmentConfig(), seeded(3)))


def test_the_affine_path_flips_like_the_index_path() -> None:
    x = batch(n=16, h=8, w=8)
    params = draw_params(16, 8, 8, AugmentConfig(), seeded(4))  # flips only, angle 0, whole image
    assert params.flip_h.any() and params.turn.any()
    by_index = apply_params(x, params, AugmentConfig())
    by_warp = apply_params(x, params, AugmentConfig(rotation=1.0))  # rotation enabled: grid_sample runs
    torch.testing.assert_close(by_warp, by_index, atol=1e-5, rtol=0)


def test_a_quarter_turn_rotates_counter_clockwise() -> None:
    x = batch(n=2, h=8, w=8)
    params = identity_params(2, angle=torch.full((2,), math.pi / 2, dtype=torch.float64))
    out = apply_params(x, params, AugmentConfig(rotation=90.0, flips=False))
    torch.testing.assert_close(out, torch.rot90(x, 1, (-2, -1)), atol=1e-5, rtol=0)
    theta = affine_matrices(params, 8, 8)[0]
    torch.testing.assert_close(theta, torch.tensor([[0.0, -1, 0], [1, 0, 0]], dtype=torch.float64),
                               atol=1e-12, rtol=0)


def test_rotation_turns_pixels_not_normalised_coordinates_on_non_square_images() -> None:
    x = torch.zeros(1, 3, 8, 16)
    x[..., 2:6, 6:10] = 1.0  # a centred 4 x 4 square: a quarter turn in pixels maps it onto itself
    params = identity_params(1, angle=torch.full((1,), math.pi / 2, dtype=torch.float64))
    out = apply_params(x, params, AugmentConfig(rotation=90.0, flips=False))
    # the central 8 x 8 samples inside the image; the sides beyond it are reflections
    torch.testing.assert_close(out[..., 4:12], x[..., 4:12], atol=1e-5, rtol=0)
    # D^-1 R D with D = diag(W/2, H/2) = diag(8, 4) and R = [[0, -1], [1, 0]]
    torch.testing.assert_close(affine_matrices(params, 8, 16)[0],
                               torch.tensor([[0.0, -0.5, 0], [2, 0, 0]], dtype=torch.float64), atol=1e-12, rtol=0)


def test_a_crop_enlarges_the_chosen_region() -> None:
    x = torch.zeros(1, 3, 8, 8)
    x[..., :4, :4], x[..., :4, 4:], x[..., 4:, :4], x[..., 4:, 4:] = 0.1, 0.2, 0.3, 0.4
    params = identity_params(1, crop_size=torch.full((1, 2), 0.5, dtype=torch.float64),
                             crop_center=torch.tensor([[0.5, 0.5]], dtype=torch.float64))
    out = apply_params(x, params, AugmentConfig(crop_scale=(0.25, 0.25), flips=False))
    # the bottom-right quadrant, scaled 2x; the first row/column still blends a quarter of the neighbours
    torch.testing.assert_close(out[..., 1:, 1:], torch.full((1, 3, 7, 7), 0.4), atol=1e-6, rtol=0)


def test_drawn_crops_have_the_drawn_area_and_stay_inside() -> None:
    config = AugmentConfig(crop_scale=(0.3, 0.9), crop_ratio=(0.5, 2.0), rotation=20.0)
    params = draw_params(500, 16, 24, config, seeded(5))
    area = params.crop_size.prod(1)
    assert area.min() >= 0.3 - 1e-9 and area.max() <= 0.9 + 1e-9
    assert (params.crop_center.abs() + params.crop_size <= 1 + 1e-9).all()
    assert params.angle.abs().max() <= math.radians(20.0) and params.angle.abs().max() > math.radians(15.0)
    whole = draw_params(50, 16, 24, AugmentConfig(), seeded(5))
    assert (whole.crop_size == 1).all() and (whole.crop_center == 0).all()


def test_nothing_enabled_is_the_identity() -> None:
    x = batch()
    assert torch.equal(augment_batch(x, NOTHING, seeded(0)), x)
    colour = AugmentConfig(flips=False, brightness=0.5, contrast=0.5, saturation=0.5, hue=0.2)
    torch.testing.assert_close(apply_params(x, identity_params(len(x)), colour), x, atol=1e-6, rtol=0)


def test_brightness_scales_each_image_within_its_range() -> None:
    x = batch(n=8, low=0.2, high=0.6)  # x 1.5 cannot clip
    out = augment_batch(x, dataclasses.replace(NOTHING, brightness=0.5), seeded(6))
    scale = (out / x).flatten(1)
    torch.testing.assert_close(scale, scale[:, :1].expand_as(scale), atol=1e-5, rtol=0)
    assert scale.min() >= 0.5 - 1e-6 and scale.max() <= 1.5 + 1e-6 and scale.std() > 0.01


def test_contrast_keeps_the_mean_grey() -> None:
    x = batch(n=8, low=0.3, high=0.7)
    out = augment_batch(x, dataclasses.replace(NOTHING, contrast=0.5), seeded(7))
    assert not torch.allclose(out, x)
    # exact but for torchvision's grey weights summing to 0.9999: an error of at most 1e-4 x the mean
    torch.testing.assert_close(rgb_to_grayscale(out).mean((1, 2, 3)), rgb_to_grayscale(x).mean((1, 2, 3)),
                               atol=1e-4, rtol=0)


def test_saturation_keeps_the_greyscale() -> None:
    x = batch(n=8, low=0.3, high=0.7)
    out = augment_batch(x, dataclasses.replace(NOTHING, saturation=0.5), seeded(8))
    assert not torch.allclose(out, x)
    # exact but for torchvision's grey weights summing to 0.9999 (see the contrast test)
    torch.testing.assert_close(rgb_to_grayscale(out), rgb_to_grayscale(x), atol=1e-4, rtol=0)


def test_hue_keeps_grey_grey_and_turns_colour() -> None:
    grey = batch(n=4).mean(1, keepdim=True).expand(4, 3, 16, 16).contiguous()
    config = dataclasses.replace(NOTHING, hue=0.5)
    out = augment_batch(grey, config, seeded(9))
    torch.testing.assert_close(out, grey, atol=1e-5, rtol=0)
    colour = batch(n=4, low=0.3, high=0.7)
    turned = augment_batch(colour, config, seeded(9))
    assert (turned - colour).abs().max() > 0.05


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_runs_on_the_batch_device() -> None:
    x = batch()
    out = augment_batch(x.cuda(), FULL, seeded(0))
    assert out.is_cuda
    torch.testing.assert_close(out.cpu(), augment_batch(x, FULL, seeded(0)), atol=1e-4, rtol=0)


@pytest.mark.parametrize("x", [torch.rand(3, 8, 8), torch.zeros(2, 3, 8, 8, dtype=torch.uint8), torch.rand(2, 4, 8, 8)])
def test_bad_batches_are_rejected(x: torch.Tensor) -> None:
    with pytest.raises(ValueError, match=r"x must be a float N x 3 x H x W tensor"):
        augment_batch(x, FULL, seeded(0))


@pytest.mark.parametrize(("fields", "message"), [
    ({"crop_scale": (0.0, 1.0)}, r"augment.crop_scale: \[0.0, 1.0\]"),
    ({"crop_scale": (0.8, 0.5)}, r"augment.crop_scale"),
    ({"crop_scale": (0.5, 1.2)}, r"augment.crop_scale"),
    ({"crop_scale": (0.5,)}, r"augment.crop_scale"),
    ({"crop_ratio": (0.0, 1.0)}, r"augment.crop_ratio"),
    ({"rotation": -5.0}, r"augment.rotation: -5.0"),
    ({"rotation": 200.0}, r"augment.rotation"),
    ({"brightness": -0.1}, r"augment.brightness: -0.1"),
    ({"contrast": float("nan")}, r"augment.contrast"),
    ({"saturation": float("inf")}, r"augment.saturation"),
    ({"hue": 0.6}, r"augment.hue: 0.6"),
])
def test_config_errors_name_the_field(fields: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        AugmentConfig(**fields)
    with pytest.raises(ConfigError, match=message):
        from_dict(AugmentConfig, {k: list(v) if isinstance(v, tuple) else v for k, v in fields.items()})
