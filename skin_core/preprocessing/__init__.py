"""Per-image preprocessing: decode, remove the dark border, resize to a square."""

from .border import BorderResult, remove_border
from .decode import ImageRejected, decode_image
from .pipeline import ProcessedImage, encode_png, preprocess_image
from .resize import resize_square

__all__ = [
    "BorderResult",
    "ImageRejected",
    "ProcessedImage",
    "decode_image",
    "encode_png",
    "preprocess_image",
    "remove_border",
    "resize_square",
]
