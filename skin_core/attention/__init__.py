"""Where a network looks: attention maps as the attention-transfer loss defines them, and lesion focus."""

from skin_core.attention.focus import mask_share
from skin_core.attention.maps import at_distances, attention_maps, layer_map
from skin_core.attention.scores import (TEACHER, image_scores, lesion_focus_table, mean_table, models_maps,
                                        one_image, teacher_distances)

__all__ = ["TEACHER", "at_distances", "attention_maps", "image_scores", "layer_map", "lesion_focus_table",
           "mask_share", "mean_table", "models_maps", "one_image", "teacher_distances"]
