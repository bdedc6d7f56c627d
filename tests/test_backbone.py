"""The ResNet backbone's outputs and gradients, and loading its weights (never from the network)."""

from __future__ import annotations

import pytest
import torch
from torchvision import models

from skin_core.layers import LAYERS
from skin_core.models import Backbone, WeightsError, WeightsUnavailable, check_transfer_layers, layer_grid, load_backbone_weights
from skin_core.models.weights import imagenet_cache_path


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


@pytest.mark.parametrize(("arch", "channels"), [("resnet18", (64, 128, 256, 512)),
                                                ("resnet50", (256, 512, 1024, 2048))])
def test_output_shapes_at_64px(arch: str, channels: tuple[int, ...]) -> None:
    model = Backbone(arch, embedding_dim=32)
    out = model(torch.randn(2, 3, 64, 64))
    for i, (c, side) in enumerate(zip(channels, (16, 8, 4, 2)), start=1):
        assert out[f"layer{i}"].shape == (2, c, side, side)
    assert model.feature_dim == channels[-1]
    assert out["pooled"].shape == (2, channels[-1])
    assert out["embedding"].shape == (2, 32)
    assert torch.allclose(out["embedding"].norm(dim=1), torch.ones(2), atol=1e-5)


def test_smallest_input_and_layer_selection() -> None:
    model = Backbone("resnet18", embedding_dim=8, layers=["layer2"]).eval()
    out = model(torch.randn(1, 3, 32, 32))
    assert set(out) == {"layer2", "pooled", "embedding"}
    assert out["layer2"].shape == (1, 128, 4, 4)


def test_every_parameter_gets_a_gradient() -> None:
    """DDP without find_unused_parameters needs every parameter in the graph, layer1 included."""
    model = Backbone("resnet18", embedding_dim=16, layers=["layer4"])
    out = model(torch.randn(2, 3, 64, 64))
    (out["embedding"] @ torch.randn(16)).sum().backward()
    assert all(p.grad is not None for p in model.parameters())
    assert model.body.layer1[0].conv1.weight.grad.abs().sum() > 0


def test_unknown_arch_lists_choices() -> None:
    with pytest.raises(ValueError, match="resnet18, resnet34, resnet50"):
        Backbone("vgg16")


def test_backbone_state_dict_round_trips(tmp_path) -> None:
    path = tmp_path / "teacher.pt"
    source = Backbone("resnet18", embedding_dim=16).eval()
    torch.save(source.state_dict(), path)
    loaded = Backbone("resnet18", embedding_dim=16, weights=str(path)).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(source(x)["embedding"], loaded(x)["embedding"])
        assert torch.equal(source(x)["layer3"], loaded(x)["layer3"])


def test_plain_resnet_state_dict_loads_into_trunk(tmp_path) -> None:
    path = tmp_path / "resnet18.pt"
    resnet = models.resnet18(weights=None)  # with its ImageNet-shaped fc, which is ignored
    torch.save(resnet.state_dict(), path)
    model = Backbone("resnet18", embedding_dim=16, weights=str(path))
    assert torch.equal(model.body.layer4[1].conv2.weight, resnet.layer4[1].conv2.weight)


def test_backbone_state_dict_loads_into_plain_resnet(tmp_path) -> None:
    path = tmp_path / "teacher.pt"
    source = Backbone("resnet18", embedding_dim=16)
    torch.save(source.state_dict(), path)
    resnet = load_backbone_weights(models.resnet18(weights=None), str(path))
    assert torch.equal(resnet.conv1.weight, source.body.conv1.weight)


class _NotATensor:
    pass


def test_pickled_object_refused_naming_file(tmp_path) -> None:
    path = tmp_path / "evil.pt"
    torch.save({"conv1.weight": _NotATensor()}, path)
    with pytest.raises(WeightsError, match="cannot load weights file .*evil.pt") as info:
        Backbone("resnet18", embedding_dim=8, weights=str(path))
    assert "Weights only load failed" in str(info.value)  # refused by the unpickler, not later


def test_missing_and_mismatched_files_name_the_file(tmp_path) -> None:
    with pytest.raises(WeightsError, match="nowhere.pt"):
        Backbone("resnet18", embedding_dim=8, weights=str(tmp_path / "nowhere.pt"))
    path = tmp_path / "r34.pt"
    torch.save(models.resnet34(weights=None).state_dict(), path)
    with pytest.raises(WeightsError, match="r34.pt"):
        Backbone("resnet18", embedding_dim=8, weights=str(path))


def _no_download(*args, **kwargs):
    raise AssertionError("a download was attempted")


def test_imagenet_without_cache_fails_at_once(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setattr(torch.hub, "download_url_to_file", _no_download)
    expected, _ = imagenet_cache_path("resnet18")
    assert expected.is_relative_to(tmp_path)
    with pytest.raises(WeightsUnavailable, match=str(expected)):
        Backbone("resnet18", embedding_dim=8, weights="imagenet")


def test_imagenet_loads_from_cache(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setattr(torch.hub, "download_url_to_file", _no_download)
    path, _ = imagenet_cache_path("resnet18")
    path.parent.mkdir(parents=True)
    cached = models.resnet18(weights=None)  # stands in for the real file, same keys and shapes
    torch.save(cached.state_dict(), path)
    model = Backbone("resnet18", embedding_dim=8, weights="imagenet")
    assert torch.equal(model.body.conv1.weight, cached.conv1.weight)
    assert torch.equal(model.body.layer2[0].conv1.weight, cached.layer2[0].conv1.weight)


@pytest.mark.parametrize("size", [32, 33, 48, 100])
def test_layer_grid_matches_the_real_feature_maps(size: int) -> None:
    out = Backbone("resnet18", 8).eval()(torch.zeros(1, 3, size, size))
    assert {k: out[k].shape[-1] for k in LAYERS} == {k: layer_grid(k, size) for k in LAYERS}


def test_transfer_from_a_one_cell_map_is_refused() -> None:
    check_transfer_layers(("layer3", "layer4"), 33)  # 2×2 maps: fine
    with pytest.raises(ValueError, match=r"layer4 at 32 px.*1×1.*size >= 33"):
        check_transfer_layers(("layer3", "layer4"), 32)
