"""Lesion masks through the preprocessing geometry (border crop box, then the square resize)."""

from __future__ import annotations

import numpy as np
import pytest

from skin_core.preprocessing import encode_png, preprocess_image, preprocess_mask

BOX = (20, 10, 180, 110)  # x0, y0, x1, y1: a 160 wide, 100 high crop of a 200×120 original


def _rect(h: int, w: int, rows: tuple[int, int], cols: tuple[int, int]) -> np.ndarray:
    mask = np.zeros((h, w), bool)
    mask[rows[0]:rows[1], cols[0]:cols[1]] = True
    return mask


@pytest.mark.parametrize(("size", "rows", "cols"), [
    # crop rows 20..60, cols 40..80; centred square drops 30 columns: cols 10..50 of 100; ×0.5
    (50, (10, 30), (5, 25)),
    # the same square grown ×2 (bilinear, threshold 0.5: the edges land exactly)
    (200, (40, 120), (20, 100)),
])
def test_center_crop_moves_a_rectangle_where_the_image_goes(size, rows, cols) -> None:
    mask = _rect(120, 200, (30, 70), (60, 100))
    out = preprocess_mask(mask, BOX, size)
    assert out.shape == (size, size) and out.dtype == bool
    np.testing.assert_array_equal(out, _rect(size, size, rows, cols))


def test_pad_moves_a_rectangle_down_by_the_padding() -> None:
    # crop rows 22..62, cols 40..80; padded to 160 with 30 rows on top: rows 52..92; ×1/4
    out = preprocess_mask(_rect(120, 200, (32, 72), (60, 100)), BOX, 40, mode="pad")
    np.testing.assert_array_equal(out, _rect(40, 40, (13, 23), (10, 20)))


def test_mask_follows_the_image_through_border_removal() -> None:
    side, radius = 512, 230
    rng = np.random.default_rng(0)
    img = np.clip(np.array([205, 160, 140]) + rng.normal(0, 6, (side, side, 3)), 0, 255).astype(np.uint8)
    mask = _rect(side, side, (200, 280), (150, 260))
    img[mask] = (60, 40, 30)  # a dark lesion
    img[np.hypot(*np.mgrid[:side, :side] - side / 2 + 0.5) > radius] = 0  # the scope's black circle
    out = preprocess_image(encode_png(img), size=128)
    assert out.had_border
    # more than half covered by the lesion = darker than halfway between lesion and skin grey
    dark = out.image.mean(axis=2) < (np.mean((60, 40, 30)) + np.mean((205, 160, 140))) / 2
    np.testing.assert_array_equal(preprocess_mask(mask, out.box, 128), dark)
    assert _iou(preprocess_mask(mask, (0, 0, side, side), 128), dark) < 0.7  # the crop matters


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / (a | b).sum())


@pytest.mark.parametrize(("mask", "box", "kwargs", "message"), [
    (np.ones((10, 10)), (0, 0, 11, 10), {}, "box"),
    (np.ones((10, 10)), (5, 0, 5, 10), {}, "box"),
    (np.ones((10, 10, 3)), (0, 0, 10, 10), {}, "2-D"),
    (np.ones((10, 10)), (0, 0, 10, 10), {"mode": "squash"}, "mode"),
    (np.ones((10, 10)), (0, 0, 10, 10), {"size": 0}, "size"),
])
def test_bad_input_raises(mask, box, kwargs, message) -> None:
    with pytest.raises(ValueError, match=message):
        preprocess_mask(mask, box, **{"size": 8, **kwargs})
