"""Initial weights for a backbone: random, torchvision's ImageNet, or a local state dict.

``weights`` is ``"none"``, ``"imagenet"`` or a path/URI (local or ``s3://``) to a
state dict saved with ``torch.save``: either a plain torchvision ResNet's
(``conv1.weight``, …; an ``fc.*`` classifier is ignored) or a ``Backbone``'s
(``body.*`` and ``head.*``).  A ``module.`` prefix from a DDP-wrapped model is
stripped.  Every failure names the file.
"""

from __future__ import annotations

import io
import logging
from pathlib import Path
from typing import Any, Mapping
from urllib.parse import urlparse

import torch
from torch import nn
from torchvision import models

from skin_core import storage

logger = logging.getLogger(__name__)

# (block type, blocks per stage) → torchvision name, to name the ImageNet weights of a bare ResNet.
_RESNET_SHAPES = {
    (models.resnet.BasicBlock, (2, 2, 2, 2)): "resnet18",
    (models.resnet.BasicBlock, (3, 4, 6, 3)): "resnet34",
    (models.resnet.Bottleneck, (3, 4, 6, 3)): "resnet50",
}


class WeightsError(RuntimeError):
    """A weights source that cannot be read or does not fit the model."""


class WeightsUnavailable(WeightsError):
    """Pretrained weights that are not on this machine (no download is attempted)."""


def _resnet_of(model: nn.Module) -> models.ResNet:
    """The torchvision ResNet inside ``model`` (a ``Backbone``) or ``model`` itself."""
    resnet = model if isinstance(model, models.ResNet) else getattr(model, "body", None)
    if not isinstance(resnet, models.ResNet):
        raise TypeError(f"expected a Backbone or a torchvision ResNet, got {type(model).__name__}")
    return resnet


def resnet_arch(resnet: models.ResNet) -> str:
    """torchvision name (``resnet50``) of a ResNet, from its block type and depth."""
    block = type(resnet.layer1[0])
    depth = tuple(len(getattr(resnet, f"layer{i}")) for i in range(1, 5))
    if (block, depth) not in _RESNET_SHAPES:
        raise WeightsError(f"no torchvision name for a ResNet of {block.__name__} × {depth}")
    return _RESNET_SHAPES[(block, depth)]


def imagenet_cache_path(arch: str) -> tuple[Path, str]:
    """Where torch hub keeps ``arch``'s default ImageNet weights, and their download URL."""
    url = models.get_model_weights(arch).DEFAULT.url
    return Path(torch.hub.get_dir()) / "checkpoints" / Path(urlparse(url).path).name, url


def imagenet_state_dict(arch: str) -> dict[str, torch.Tensor]:
    """torchvision's default ImageNet weights for ``arch``, from the local torch hub cache only.

    Offline clusters would otherwise hang on the download, so a missing file
    fails at once with ``WeightsUnavailable`` saying where to put it.
    """
    path, url = imagenet_cache_path(arch)
    if not path.is_file():
        raise WeightsUnavailable(
            f"ImageNet weights for {arch} are not cached: expected {path} "
            f"(download {url} to that file, point TORCH_HOME at a cache holding it, "
            f"or pass a local state-dict path as weights)")
    try:
        return models.get_model_weights(arch).DEFAULT.get_state_dict(progress=False, weights_only=True)
    except Exception as err:  # a truncated or foreign file: say which one
        raise WeightsError(f"cannot load cached ImageNet weights {path}: {err}") from err


def read_state_dict(uri: str) -> dict[str, torch.Tensor]:
    """A state dict from a local path or ``s3://`` URI, loaded with ``weights_only=True``."""
    try:
        blob = storage.read_bytes(uri)
    except FileNotFoundError as err:
        raise WeightsError(f"weights file not found: {uri} (weights must be 'none', "
                           f"'imagenet' or the path of a saved state dict)") from err
    except OSError as err:
        raise WeightsError(f"cannot read weights file {uri}: {err}") from err
    try:
        # weights_only refuses arbitrary pickled objects: a weights file must not run code.
        state = torch.load(io.BytesIO(blob), map_location="cpu", weights_only=True)
    except Exception as err:
        raise WeightsError(f"cannot load weights file {uri}: {err}") from err
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise WeightsError(f"weights file {uri} does not hold a state dict (a mapping of tensors)")
    return dict(state)


def _strip(state: Mapping[str, Any], prefix: str) -> dict[str, Any]:
    return {k.removeprefix(prefix): v for k, v in state.items()}


def _load_into(model: nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """Load ``state`` into ``model``: a Backbone dict whole, otherwise into the ResNet trunk."""
    state = _strip(state, "module.")
    is_backbone_dict = any(k.startswith("body.") for k in state)
    if is_backbone_dict and not isinstance(model, models.ResNet):
        target, allowed_missing = model, ()
    else:
        if is_backbone_dict:
            state = {k[len("body."):]: v for k, v in state.items() if k.startswith("body.")}
        # The classifier is task-specific: never carried over, never required.
        state = {k: v for k, v in state.items() if not k.startswith("fc.")}
        target, allowed_missing = _resnet_of(model), ("fc.",)
    try:
        result = target.load_state_dict(state, strict=False)
    except RuntimeError as err:  # shape mismatches raise even when not strict
        raise WeightsError(f"weights {source} do not fit the model: {err}") from err
    missing = [k for k in result.missing_keys if not k.startswith(allowed_missing)]
    if missing or result.unexpected_keys:
        raise WeightsError(f"weights {source} do not fit the model: missing {missing[:5]}, "
                           f"unexpected {result.unexpected_keys[:5]}")


def load_backbone_weights(model: nn.Module, weights: str) -> nn.Module:
    """Initialise a ``Backbone`` or torchvision ResNet from ``weights``; returns ``model``.

    ``"none"`` keeps the random initialisation; ``"imagenet"`` loads the trunk
    from the torch hub cache (``WeightsUnavailable`` when absent); anything else
    is a state-dict path or URI.  Raises ``WeightsError`` naming the source.
    """
    if weights == "none":
        return model
    if weights == "imagenet":
        arch = resnet_arch(_resnet_of(model))
        _load_into(_resnet_of(model), imagenet_state_dict(arch), f"ImageNet {arch}")
    else:
        _load_into(model, read_state_dict(weights), weights)
    logger.info("loaded %s weights into %s", weights, type(model).__name__)
    return model
