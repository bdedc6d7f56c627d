"""Where a network looks: attention maps as the attention-transfer loss defines them, and lesion focus."""

from skin_core.attention.focus import mask_share
from skin_core.attention.maps import at_distances, attention_maps, layer_map

__all__ = ["at_distances", "attention_maps", "layer_map", "mask_share"]
