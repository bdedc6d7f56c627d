"""Per-image preprocessing: decode, remove the dark border, correct the colour cast, resize to a square
(and a lesion mask alike)."""

from .border import BorderResult, field_of_view, remove_border
from .color import COLOR_CONSTANCY, apply_color_constancy, shades_of_gray
from .decode import ImageRejected, decode_image
from .masks import preprocess_mask
from .pipeline import ProcessedImage, decode_pngs, encode_png, preprocess_image, preprocess_with
from .resize import resize_square

__all__ = [
    "BorderResult",
    "COLOR_CONSTANCY",
    "ImageRejected",
    "ProcessedImage",
    "apply_color_constancy",
    "decode_image",
    "decode_pngs",
    "encode_png",
    "field_of_view",
    "preprocess_image",
    "preprocess_mask",
    "preprocess_with",
    "remove_border",
    "resize_square",
    "shades_of_gray",
]
