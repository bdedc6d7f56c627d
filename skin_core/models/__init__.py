"""ResNet backbone with an embedding head, and its initial weights."""

from .backbone import ARCHS, Backbone, build_resnet, check_transfer_layers, layer_grid
from .factory import create_model
from .weights import WeightsError, WeightsUnavailable, load_backbone_weights

__all__ = [
    "ARCHS",
    "Backbone",
    "WeightsError",
    "WeightsUnavailable",
    "build_resnet",
    "create_model",
    "check_transfer_layers",
    "layer_grid",
    "load_backbone_weights",
]
