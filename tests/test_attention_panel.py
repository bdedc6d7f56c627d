"""Attention panel figure: the data behind it, its shared colour scales and the files it writes."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import torch

from skin_core.attention import at_distances, attention_maps
from skin_core.models.backbone import Backbone
from skin_core.plots.attention import attention_panel, draw_attention_panel

LAYERS = ("layer1", "layer3", "layer4")


@pytest.fixture(scope="module")
def batch() -> tuple[np.ndarray, dict[str, dict[str, np.ndarray]]]:
    """Maps of two images from three small untrained networks (teacher, two students)."""
    images = np.random.default_rng(0).integers(0, 256, (2, 64, 64, 3), dtype=np.uint8)
    maps = {}
    for seed, name in enumerate(("teacher", "AT layer3+layer4", "baseline")):
        torch.manual_seed(seed)
        maps[name] = attention_maps(Backbone("resnet18", embedding_dim=4, layers=LAYERS), images, LAYERS)
    return images, maps


def _panel_inputs(maps, index: int):
    per_image = {m: {k: v[index] for k, v in per_model.items()} for m, per_model in maps.items()}
    distances = {m: {k: float(d[index]) for k, d in at_distances(maps[m], maps["teacher"]).items()}
                 for m in maps if m != "teacher"}
    return per_image, distances


def test_json_holds_the_maps_and_distances_drawn(batch, tmp_path) -> None:
    images, maps = batch
    per_image, distances = _panel_inputs(maps, 1)
    png = attention_panel(images[1], per_image, distances, tmp_path / "panels" / "img1.png", title="ISIC_1")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    data = json.loads(png.with_suffix(".json").read_text())
    assert data["title"] == "ISIC_1" and list(data["layers"]) == list(LAYERS)
    for layer in LAYERS:
        row = data["layers"][layer]
        for model in maps:
            np.testing.assert_array_equal(np.array(row["maps"][model]), maps[model][layer][1])
        assert set(row["distances"]) == {"AT layer3+layer4", "baseline"}
        assert row["distances"]["baseline"] == at_distances(maps["baseline"], maps["teacher"])[layer][1]
        assert row["vmin"] == 0.0 and row["vmax"] == max(float(maps[m][layer][1].max()) for m in maps)


def test_each_row_shares_one_colour_scale(batch) -> None:
    images, maps = batch
    per_image, distances = _panel_inputs(maps, 0)
    fig = draw_attention_panel(images[0], per_image, distances)
    overlays = {im.get_label(): im for ax in fig.get_axes() for im in ax.get_images() if "/" in im.get_label()}
    assert len(overlays) == len(LAYERS) * len(maps)
    tops = []
    for layer in LAYERS:
        clims = {overlays[f"{layer}/{m}"].get_clim() for m in maps}
        assert clims == {(0.0, max(float(per_image[m][layer].max()) for m in maps))}
        tops.append(clims.pop()[1])
        assert overlays[f"{layer}/baseline"].get_array().shape == images[0].shape[:2]  # upsampled
    assert len(set(tops)) == len(LAYERS)  # rows are scaled separately
    titles = [ax.get_title() for ax in fig.get_axes()]
    assert sum(len(re.findall(r"AT \d", t)) for t in titles) == len(LAYERS) * 2  # each student panel, not the teacher
    assert f"AT {distances['baseline']['layer3']:.1e}" in "".join(titles)


def test_a_model_without_a_layer_gets_an_empty_panel(batch, tmp_path) -> None:
    images, maps = batch
    per_image, _ = _panel_inputs(maps, 0)
    per_image["baseline"] = {"layer4": per_image["baseline"]["layer4"]}
    attention_panel(images[0], per_image, {"baseline": {"layer4": 1e-4}}, tmp_path / "p.png")
    data = json.loads((tmp_path / "p.json").read_text())
    assert "baseline" not in data["layers"]["layer1"]["maps"] and "baseline" in data["layers"]["layer4"]["maps"]


@pytest.mark.parametrize(("change", "message"), [
    ({"maps": {"teacher": {"layer5": np.ones((2, 2))}}}, "layers"),
    ({"maps": {"teacher": {"layer1": -np.ones((2, 2))}}}, "non-negative"),
    ({"distances": {"student": {"layer1": 0.1}}}, "not drawn"),
    ({"image": np.zeros((8, 8), np.uint8)}, "image_uint8"),
])
def test_bad_inputs_raise(change, message, tmp_path) -> None:
    args = {"image": np.zeros((8, 8, 3), np.uint8), "maps": {"teacher": {"layer1": np.ones((2, 2))}},
            "distances": {}, **change}
    with pytest.raises(ValueError, match=message):
        attention_panel(args["image"], args["maps"], args["distances"], tmp_path / "x.png")
    assert not list(tmp_path.iterdir())
