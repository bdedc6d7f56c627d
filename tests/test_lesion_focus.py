"""Share of attention mass inside a lesion mask."""

from __future__ import annotations

import numpy as np
import pytest

from skin_core.attention import mask_share


def _disc(h: int, w: int, cy: float, cx: float, r: float) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w]
    return (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r


def test_attention_inside_the_mask_has_share_one() -> None:
    mask = np.zeros((64, 64), bool)
    mask[16:48, 8:40] = True  # on an 8×8 grid: cells rows 2..5, cols 1..4 are fully inside
    attention = np.zeros((8, 8))
    attention[2:6, 1:5] = np.random.default_rng(0).random((4, 4)) + 0.1
    assert mask_share(attention, mask) == pytest.approx(1.0, abs=1e-12)


def test_attention_outside_the_mask_has_share_zero() -> None:
    mask = _disc(64, 64, 20, 20, 10)  # within rows/cols 10..30: grid cells 1..3
    attention = np.zeros((8, 8))
    attention[5:, :] = 1.0  # rows 40.. only
    assert mask_share(attention, mask) == 0.0


def test_uniform_attention_shares_the_mask_area() -> None:
    # Area averaging keeps each cell's covered fraction; cells have equal areas, so a uniform
    # map's share is the mask's area fraction exactly, whether or not the mask meets the grid lines.
    aligned = np.zeros((64, 64), bool)
    aligned[8:24, 0:40] = True
    assert mask_share(np.ones((8, 8)), aligned) == pytest.approx(16 * 40 / 64**2, abs=1e-12)
    # 50×70 onto 7×9: non-integer cell sizes, whose area weights OpenCV holds in float32 (~1e-7 relative)
    blob = _disc(50, 70, 23.3, 31.7, 13.4)
    assert mask_share(np.full((7, 9), 0.2), blob) == pytest.approx(blob.mean(), abs=1e-6)


def test_share_weights_cells_by_their_mass() -> None:
    mask = np.zeros((4, 4), bool)
    mask[:, :2] = True  # left half of a 2×2 grid
    attention = np.array([[3.0, 1.0], [0.0, 0.0]])
    assert mask_share(attention, mask) == pytest.approx(0.75)
    assert mask_share(attention, mask.astype(np.uint8) * 255) == pytest.approx(0.75)  # PNG masks work too


@pytest.mark.parametrize(("attention", "mask", "message"), [
    (np.array([[1.0, -0.1]]), np.ones((4, 4), bool), "non-negative"),
    (np.zeros((2, 2)), np.ones((4, 4), bool), "empty"),
    (np.array([[np.nan, 1.0]]), np.ones((4, 4), bool), "finite"),
    (np.ones(4), np.ones((4, 4), bool), "2-D h×w map"),
    (np.ones((8, 8)), np.ones((4, 4), bool), "at least as large"),
])
def test_bad_input_raises(attention, mask, message) -> None:
    with pytest.raises(ValueError, match=message):
        mask_share(attention, mask)
