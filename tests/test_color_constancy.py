"""Shades of Gray colour constancy, its wiring into preprocessing, and its config fields."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

from skin_core.config import COLOR_CONSTANCY_METHODS, ConfigError, PipelineConfig, PreprocessConfig, from_dict
from skin_core.preprocessing import decode_pngs
from skin_core.models.bundle import ModelCard
from skin_core.preprocessing import (
    COLOR_CONSTANCY,
    apply_color_constancy,
    encode_png,
    preprocess_image,
    preprocess_with,
    shades_of_gray,
)
from skin_core.preprocessing import pipeline
from skin_core.preprocessing.records import preprocess_uri

CAST = np.array([1.3, 1.0, 0.7])


def grey_world_scene(h: int = 48, w: int = 64, seed: int = 0) -> np.ndarray:
    """A colourful scene whose three channels hold the same values in different places, so every
    illuminant estimate (any p) is the same for R, G and B; at most 190 so a 1.3 gain cannot clip."""
    rng = np.random.default_rng(seed)
    values = rng.integers(20, 191, h * w)
    return np.stack([rng.permutation(values).reshape(h, w) for _ in range(3)], -1).astype(np.uint8)


def with_cast(rgb: np.ndarray, gains: np.ndarray = CAST) -> np.ndarray:
    return np.rint(rgb * gains).astype(np.uint8)


def test_a_known_cast_is_corrected_back_to_the_scene() -> None:
    scene = grey_world_scene()
    cast = with_cast(scene)
    assert cast[..., 0].mean() - cast[..., 2].mean() > 50  # clearly red before
    out = shades_of_gray(cast)
    # the gains undo the cast up to one common factor, ||cast|| / sqrt(3) (the estimate is unit-normalised)
    expected = scene * np.linalg.norm(CAST) / np.sqrt(3)
    assert np.abs(out.astype(float) - expected).max() <= 1.5  # the cast image was rounded once already
    means = out.reshape(-1, 3).mean(0)
    assert means.max() - means.min() < 0.5


def test_a_tiny_image_matches_the_hand_computation() -> None:
    rgb = np.array([[[200, 100, 50], [10, 20, 30]],
                    [[255, 0, 128], [60, 90, 120]]], np.uint8)
    red, green, blue = [200.0, 10, 255, 60], [100.0, 20, 0, 90], [50.0, 30, 128, 120]
    e = np.array([(np.mean(np.power(c, 6)) ** (1 / 6)) for c in (red, green, blue)])
    unit = e / np.sqrt(e[0] ** 2 + e[1] ** 2 + e[2] ** 2)
    gains = 1 / (np.sqrt(3) * unit)
    expected = np.rint(np.clip(rgb * gains, 0, 255)).astype(np.uint8)
    assert not np.array_equal(expected, rgb)
    np.testing.assert_array_equal(shades_of_gray(rgb, 6.0), expected)


def test_a_neutral_image_is_unchanged() -> None:
    grey = np.repeat(np.random.default_rng(1).integers(0, 256, (20, 30, 1)), 3, axis=2).astype(np.uint8)
    np.testing.assert_array_equal(shades_of_gray(grey), grey)
    scene = grey_world_scene(seed=2)  # colourful, but with a neutral illuminant estimate
    np.testing.assert_array_equal(shades_of_gray(scene), scene)


def test_power_one_is_grey_world() -> None:
    cast = with_cast(grey_world_scene(seed=3), np.array([0.8, 1.0, 1.25]))
    means = cast.reshape(-1, 3).mean(0)
    # Grey World: gain_c proportional to 1 / mean_c, scaled so a neutral illuminant is kept
    expected = np.rint(np.clip(cast * (np.linalg.norm(means) / np.sqrt(3)) / means, 0, 255)).astype(np.uint8)
    out = shades_of_gray(cast, power=1.0)
    np.testing.assert_array_equal(out, expected)
    out_means = out.reshape(-1, 3).mean(0)
    assert out_means.max() - out_means.min() < 0.5


def test_an_all_black_image_comes_back_unchanged() -> None:
    black = np.zeros((8, 8, 3), np.uint8)
    out = shades_of_gray(black)
    np.testing.assert_array_equal(out, black)
    assert out is not black


def test_a_channel_that_is_zero_everywhere_stays_zero() -> None:
    rgb = np.zeros((4, 4, 3), np.uint8)
    rgb[..., 0], rgb[..., 1] = 120, 60
    out = shades_of_gray(rgb)
    assert (out[..., 2] == 0).all() and not np.isnan(out.astype(float)).any()


@pytest.mark.parametrize(("rgb", "power", "message"), [
    (np.zeros((4, 4, 3), np.float32), 6.0, "uint8 H x W x 3"),
    (np.zeros((4, 4), np.uint8), 6.0, "uint8 H x W x 3"),
    (np.zeros((4, 4, 4), np.uint8), 6.0, "uint8 H x W x 3"),
    (np.zeros((0, 4, 3), np.uint8), 6.0, "non-empty"),
    ([[[1, 2, 3]]], 6.0, "got a list"),
    (np.zeros((4, 4, 3), np.uint8), 0.5, "power must be"),
    (np.zeros((4, 4, 3), np.uint8), float("nan"), "power must be"),
])
def test_bad_input_is_rejected(rgb: np.ndarray, power: float, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        shades_of_gray(rgb, power)


def test_methods_are_chosen_by_name() -> None:
    cast = with_cast(grey_world_scene(seed=4))
    assert apply_color_constancy(cast, "none", 6.0) is cast
    np.testing.assert_array_equal(apply_color_constancy(cast, "shades_of_gray", 2.0), shades_of_gray(cast, 2.0))
    with pytest.raises(ValueError, match=r"'retinex' is unknown; use one of none, shades_of_gray"):
        apply_color_constancy(cast, "retinex", 6.0)
    assert COLOR_CONSTANCY_METHODS == tuple(COLOR_CONSTANCY)  # the config accepts exactly the registry


def test_preprocess_image_applies_the_chosen_method() -> None:
    data = encode_png(with_cast(grey_world_scene(64, 64, seed=5)))
    plain = preprocess_image(data, size=32, color_constancy="none").image
    corrected = preprocess_image(data, size=32, color_constancy="shades_of_gray").image
    assert not np.array_equal(plain, corrected)
    spread = [np.ptp(img.reshape(-1, 3).mean(0)) for img in (plain, corrected)]
    assert spread[1] < spread[0] / 10


def test_preprocess_with_passes_every_per_image_field(monkeypatch: pytest.MonkeyPatch) -> None:
    kwarg_of = {"size": "size", "min_side": "min_side", "remove_borders": "remove_borders", "resize_mode": "mode",
                "border_crop": "border_crop", "color_constancy": "color_constancy", "sog_power": "sog_power"}
    # a new PreprocessConfig field must be passed on too (batch_size only groups images into tasks)
    assert {f.name for f in dataclasses.fields(PreprocessConfig)} == set(kwarg_of) | {"batch_size"}
    config = PreprocessConfig(size=17, min_side=5, remove_borders=False, resize_mode="pad", border_crop="bbox_fill",
                              color_constancy="shades_of_gray", sog_power=3.0)
    seen = {}
    monkeypatch.setattr(pipeline, "preprocess_image", lambda data, **kwargs: seen.update(kwargs))
    preprocess_with(b"bytes", config, name="x")
    assert seen == {**{kwarg: getattr(config, field) for field, kwarg in kwarg_of.items()}, "name": "x"}


def test_records_use_the_configured_colour_constancy(tmp_path: Path) -> None:
    path = tmp_path / "cast.png"
    data = encode_png(with_cast(grey_world_scene(40, 40, seed=6)))
    path.write_bytes(data)
    config = PreprocessConfig(size=24, color_constancy="shades_of_gray")
    row = preprocess_uri(str(path), "cast", config)
    assert row["reject_reason"] == ""
    np.testing.assert_array_equal(decode_pngs([row["image"]])[0], preprocess_with(data, config).image)


@pytest.mark.parametrize(("fields", "message"), [
    ({"color_constancy": "retinex"}, r"preprocess.color_constancy: 'retinex'; use none or shades_of_gray"),
    ({"sog_power": 0.5}, r"preprocess.sog_power: 0.5"),
    ({"sog_power": float("inf")}, r"preprocess.sog_power: inf"),
])
def test_config_errors_name_the_field(fields: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        PreprocessConfig(**fields)
    with pytest.raises(ConfigError, match=message):
        from_dict(PipelineConfig, {"preprocess": fields})


def test_model_cards_written_before_colour_constancy_still_load() -> None:
    raw = {"arch": "resnet18", "classes": ["MEL"], "variant": "baseline",
           "preprocess": {"size": 64, "min_side": 32, "remove_borders": True, "resize_mode": "center_crop",
                          "batch_size": 32}}
    card = ModelCard.from_json(json.dumps(raw).encode())
    assert (card.preprocess.color_constancy, card.preprocess.sog_power) == ("none", 6.0)
