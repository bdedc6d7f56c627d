"""Attention maps and per-image AT distances, against the attention-transfer loss itself."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from skin_core.attention import at_distances, attention_maps, layer_map
from skin_core.data.transforms import to_input
from skin_core.losses.attention_transfer import at_term, attention_map, channel_map
from skin_core.models.backbone import Backbone


class FixedFeatures(nn.Module):
    """A stand-in network: a 1×1 conv per layer on a pooled input, so maps are known from the input."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, 5, 1)
        self.bn = nn.BatchNorm2d(5)  # behaves differently in train mode: eval must be used

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        h = self.bn(self.conv(x))
        return {"layer2": nn.functional.avg_pool2d(h, 4), "layer3": nn.functional.avg_pool2d(h, 8)}


def _images(n: int, size: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, size, size, 3), dtype=np.uint8)


def test_maps_are_the_loss_attention_map_on_the_layer_grid() -> None:
    model, images = FixedFeatures(), _images(5, 32)
    model.train()
    maps = attention_maps(model, images, ["layer2", "layer3"], batch_size=2)
    assert model.training  # mode restored
    model.eval()
    with torch.no_grad():
        feats = model(to_input(torch.from_numpy(images)))
    for layer, side in (("layer2", 8), ("layer3", 4)):
        expected = attention_map(feats[layer]).numpy().reshape(5, side, side)
        assert maps[layer].shape == (5, side, side)
        np.testing.assert_allclose(maps[layer], expected, rtol=1e-6, atol=1e-8)
        np.testing.assert_allclose((maps[layer] ** 2).sum(axis=(1, 2)), 1.0, rtol=1e-5)


def test_maps_of_a_real_backbone_and_missing_layers() -> None:
    model = Backbone("resnet18", embedding_dim=4, layers=("layer3", "layer4"))
    maps = attention_maps(model, _images(2, 64), ["layer3", "layer4"])
    assert maps["layer3"].shape == (2, 4, 4) and maps["layer4"].shape == (2, 2, 2)
    with pytest.raises(ValueError, match=r"\['layer1'\] are not in the model's outputs"):
        attention_maps(model, _images(2, 64), ["layer1", "layer3"])


@pytest.mark.parametrize("bad", [np.zeros((0, 8, 8, 3), np.uint8), np.zeros((2, 8, 8, 3), np.float32),
                                 np.zeros((8, 8, 3), np.uint8)])
def test_bad_images_are_refused(bad) -> None:
    with pytest.raises(ValueError, match="images_uint8"):
        attention_maps(FixedFeatures(), bad, ["layer2"])


@pytest.mark.parametrize("teacher_side", [4, 7, 3])  # same grid, area-pooled (7 -> 4), bilinear (3 -> 4)
def test_mean_per_image_distance_is_the_at_term(teacher_side: int) -> None:
    gen = torch.Generator().manual_seed(teacher_side)
    student = torch.randn(6, 5, 4, 4, generator=gen, dtype=torch.float64)
    teacher = torch.randn(6, 9, teacher_side, teacher_side, generator=gen, dtype=torch.float64)
    distances = at_distances({"layer3": layer_map(student)}, {"layer3": layer_map(teacher)})
    assert distances["layer3"].shape == (6,)
    assert float(distances["layer3"].mean()) == pytest.approx(float(at_term(student, teacher)), rel=1e-12)
    # one image alone: its own AT term
    assert distances["layer3"][2] == pytest.approx(float(at_term(student[2:3], teacher[2:3])), rel=1e-12)


def test_distances_accept_raw_channel_maps_and_vanish_for_equal_maps() -> None:
    feats = torch.randn(3, 4, 5, 5, dtype=torch.float64)
    raw = channel_map(feats)[:, 0].numpy() * 7.0  # any per-image scale
    distances = at_distances({"layer2": layer_map(feats), "layer4": raw}, {"layer2": raw, "layer1": raw})
    assert list(distances) == ["layer2"]  # only the shared layer
    np.testing.assert_allclose(distances["layer2"], 0.0, atol=1e-15)


def test_distance_errors_name_the_problem() -> None:
    with pytest.raises(ValueError, match="share no layer"):
        at_distances({"layer1": np.ones((1, 2, 2))}, {"layer2": np.ones((1, 2, 2))})
    with pytest.raises(ValueError, match="layer1: need N×h×w"):
        at_distances({"layer1": np.ones((2, 2, 2))}, {"layer1": np.ones((3, 2, 2))})
