"""Preprocess manifest rows: read each image's bytes, decode, remove the black edge, resize, encode.

``preprocess_frame`` is the unit of work that Ray Data maps over blocks and that
the single-process benchmark loops over: one function, two schedulers.  A bad
image becomes a row with ``reject_reason`` set, never an exception.
"""

from __future__ import annotations

import logging
from typing import Any

import pandas as pd

from skin_core import storage
from skin_core.config import PreprocessConfig
from skin_core.data.isic import MANIFEST_COLUMNS
from skin_core.preprocessing.decode import ImageRejected
from skin_core.preprocessing.pipeline import encode_png, preprocess_with

logger = logging.getLogger(__name__)

RESULT_COLUMNS = ("image", "had_border", "crop_x0", "crop_y0", "crop_x1", "crop_y1",
                  "orig_width", "orig_height", "reject_reason")
SHARD_COLUMNS = (*MANIFEST_COLUMNS, *RESULT_COLUMNS)


def _rejected(reason: str) -> dict[str, Any]:
    return {"image": b"", "had_border": False, "crop_x0": 0, "crop_y0": 0, "crop_x1": 0, "crop_y1": 0,
            "orig_width": 0, "orig_height": 0, "reject_reason": reason}


def preprocess_uri(uri: str, image_id: str, config: PreprocessConfig) -> dict[str, Any]:
    """The result columns for one image; failures are recorded, not raised."""
    try:
        data = storage.read_bytes(uri)
        done = preprocess_with(data, config, name=image_id)
    except ImageRejected as err:
        return _rejected(err.reason)
    except OSError as err:
        logger.warning("%s: cannot read %s: %s", image_id, uri, err)
        return _rejected("unreadable")
    except Exception as err:  # noqa: BLE001 - one odd image must not end a 25,000-image job
        logger.exception("%s: unexpected failure on %s", image_id, uri)
        return _rejected(f"error: {type(err).__name__}")
    x0, y0, x1, y1 = done.box
    width, height = done.original_size
    return {"image": encode_png(done.image), "had_border": bool(done.had_border),
            "crop_x0": x0, "crop_y0": y0, "crop_x1": x1, "crop_y1": y1,
            "orig_width": width, "orig_height": height, "reject_reason": ""}


def preprocess_frame(frame: pd.DataFrame, config: PreprocessConfig) -> pd.DataFrame:
    """Manifest rows in, the same rows with the result columns (``SHARD_COLUMNS``) out."""
    results = pd.DataFrame([preprocess_uri(u, i, config) for u, i in zip(frame["uri"], frame["image_id"])],
                           columns=list(RESULT_COLUMNS), index=frame.index)
    return pd.concat([frame[list(MANIFEST_COLUMNS)], results], axis=1)
