"""The label space and the image collections, fixed in one place.

Every table, tensor and report in the project orders classes as ``CLASSES``;
changing the order here changes it everywhere.
"""

from __future__ import annotations

# ISIC 2019 diagnostic classes, in the challenge's column order (UNK excluded:
# the training set never sets it and the model never predicts it).
CLASSES: tuple[str, ...] = ("MEL", "NV", "BCC", "AK", "BKL", "DF", "VASC", "SCC")
UNKNOWN_CLASS = "UNK"
CLASS_INDEX: dict[str, int] = {name: i for i, name in enumerate(CLASSES)}

CLASS_NAMES: dict[str, str] = {
    "MEL": "melanoma",
    "NV": "melanocytic nevus",
    "BCC": "basal cell carcinoma",
    "AK": "actinic keratosis",
    "BKL": "benign keratosis",
    "DF": "dermatofibroma",
    "VASC": "vascular lesion",
    "SCC": "squamous cell carcinoma",
}

# Source collections, told apart by the prefix of ``lesion_id``.
ORIGINS: tuple[str, ...] = ("HAM", "BCN", "MSK", "unknown")
_ORIGIN_PREFIXES: tuple[tuple[str, str], ...] = (("HAM_", "HAM"), ("BCN_", "BCN"), ("MSK", "MSK"))


def origin_of(lesion_id: str) -> str:
    """Collection of an image from its ISIC ``lesion_id`` (``unknown`` when empty or unrecognised)."""
    for prefix, origin in _ORIGIN_PREFIXES:
        if lesion_id.startswith(prefix):
            return origin
    return "unknown"
