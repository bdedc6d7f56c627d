"""Read a dataset in the ISIC 2019 challenge layout into one typed manifest.

Layout (a local folder or ``s3://bucket/prefix``)::

    ISIC_2019_Training_Input/<image>.jpg
    ISIC_2019_Training_GroundTruth.csv   image + one-hot MEL..SCC,UNK
    ISIC_2019_Training_Metadata.csv      image,age_approx,anatom_site_general,lesion_id,sex
    ISIC_2019_Training_Masks/<image>.png optional lesion masks (synthetic sets only), 255 on the lesion

Errors in the tables stop the load with the file and the CSV line; an image
listed with no file is rejected with its reason while the rest loads.
"""

from __future__ import annotations

import io
import logging
from dataclasses import dataclass
from pathlib import PurePath

import numpy as np
import pandas as pd

from skin_core import storage
from skin_core.classes import CLASS_INDEX, CLASSES, UNKNOWN_CLASS, origin_of

logger = logging.getLogger(__name__)

IMAGE_DIR = "ISIC_2019_Training_Input"
MASK_DIR = "ISIC_2019_Training_Masks"
GROUND_TRUTH = "ISIC_2019_Training_GroundTruth.csv"
METADATA = "ISIC_2019_Training_Metadata.csv"
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")
METADATA_COLUMNS = ("image", "age_approx", "anatom_site_general", "lesion_id", "sex")

# The manifest's columns, in order; every stage downstream reads these names.
MANIFEST_COLUMNS = ("image_id", "uri", "label", "label_idx", "origin", "lesion_id", "site", "age", "sex")


class DatasetError(ValueError):
    """A dataset table that cannot be read; the message names the file and line."""


@dataclass(frozen=True)
class Reject:
    """An image left out of the manifest, with why."""

    image_id: str
    uri: str
    reason: str


@dataclass(frozen=True, eq=False)
class Manifest:
    """One row per usable image (``frame``, columns ``MANIFEST_COLUMNS``) plus what was left out."""

    root: str
    frame: pd.DataFrame
    rejects: tuple[Reject, ...] = ()
    unk_dropped: int = 0

    def __len__(self) -> int:
        return len(self.frame)


def _line(index: int) -> int:
    """CSV line number of a 0-based data row (line 1 is the header)."""
    return int(index) + 2


def read_table(uri: str, required: tuple[str, ...]) -> pd.DataFrame:
    """A CSV as strings (nothing parsed as NaN), checked for its required columns."""
    try:
        raw = storage.read_bytes(uri)
    except FileNotFoundError as err:
        raise DatasetError(f"{uri}: file not found (expected in the ISIC 2019 layout)") from err
    try:
        table = pd.read_csv(io.BytesIO(raw), dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise DatasetError(f"{uri}: not a readable CSV: {err}") from err
    table.columns = [c.strip() for c in table.columns]
    missing = [c for c in required if c not in table.columns]
    if missing:
        raise DatasetError(f"{uri}: missing column(s) {', '.join(missing)}; has {', '.join(table.columns)}")
    return table


def _check_unique(table: pd.DataFrame, uri: str) -> None:
    dup = table["image"].duplicated(keep=False)
    if dup.any():
        first = table.index[dup][0]
        lines = [_line(i) for i in table.index[table["image"] == table.at[first, "image"]]]
        raise DatasetError(f"{uri}: duplicate image id {table.at[first, 'image']!r} "
                           f"on lines {', '.join(map(str, lines))} ({int(dup.sum())} rows duplicated)")


def _one_hot_labels(table: pd.DataFrame, uri: str) -> pd.Series:
    """The hot column name of each row; errors name the first bad line."""
    columns = [*CLASSES, *([UNKNOWN_CLASS] if UNKNOWN_CLASS in table.columns else [])]
    values = table[columns].apply(lambda col: pd.to_numeric(col.str.strip(), errors="coerce"))
    bad_value = ~values.isin([0.0, 1.0])
    if bad_value.any().any():
        row, col = np.argwhere(bad_value.to_numpy())[0]
        raise DatasetError(f"{uri}: line {_line(row)} ({table.at[row, 'image']}): column {columns[col]} "
                           f"is {table.iat[row, table.columns.get_loc(columns[col])]!r}, expected 0 or 1")
    hot = values.to_numpy().sum(axis=1)
    if (hot != 1).any():
        row = int(np.flatnonzero(hot != 1)[0])
        what = "no class" if hot[row] == 0 else f"{int(hot[row])} classes"
        raise DatasetError(f"{uri}: line {_line(row)} ({table.at[row, 'image']}): {what} marked; "
                           f"exactly one of {', '.join(columns)} must be 1 ({int((hot != 1).sum())} such rows)")
    return pd.Series(np.asarray(columns)[values.to_numpy().argmax(axis=1)], index=table.index)


def _image_files(root: str) -> dict[str, str]:
    """Image id → file name for the images present under the input folder."""
    names = storage.list_names(storage.join(root, IMAGE_DIR))
    return {PurePath(n).stem: n for n in names if PurePath(n).suffix.lower() in IMAGE_SUFFIXES}


def lesion_mask_uri(root: str, image_id: str) -> str:
    """Where the lesion mask of ``image_id`` lies under ``root`` (``ISIC_2019_Training_Masks/<image>.png``)."""
    return storage.join(str(root), MASK_DIR, f"{image_id}.png")


def read_lesion_mask(root: str, image_id: str) -> np.ndarray:
    """The H×W lesion mask of ``image_id`` (non-zero on the lesion); FileNotFoundError where there is none."""
    import cv2

    uri = lesion_mask_uri(root, image_id)
    mask = cv2.imdecode(np.frombuffer(storage.read_bytes(uri), np.uint8), cv2.IMREAD_GRAYSCALE)
    if mask is None:
        raise DatasetError(f"{uri}: not a readable image")
    return mask


def _metadata_columns(meta: pd.DataFrame, ids: pd.Series) -> pd.DataFrame:
    """Metadata aligned to ``ids``; images without a metadata row get empty fields."""
    aligned = meta.set_index("image").reindex(ids).fillna("")
    missing = int((~ids.isin(meta["image"])).sum())
    if missing:
        logger.warning("%d image(s) have no metadata row; their origin is unknown", missing)
    lesion = aligned["lesion_id"].str.strip()
    return pd.DataFrame({
        "origin": lesion.map(origin_of).to_numpy(),
        "lesion_id": np.where(lesion == "", ids, lesion),  # every image belongs to a lesion group
        "site": aligned["anatom_site_general"].str.strip().to_numpy(),
        "age": pd.to_numeric(aligned["age_approx"], errors="coerce").astype("float32").to_numpy(),
        "sex": aligned["sex"].str.strip().to_numpy(),
    })


def _attach_images(frame: pd.DataFrame, root: str, check_images: bool) -> tuple[pd.DataFrame, tuple[Reject, ...]]:
    """Set each row's image URI; rows whose file is absent become rejects."""
    files = _image_files(root) if check_images else {}
    names = frame["image_id"].map(files) if check_images else frame["image_id"] + ".jpg"
    present = names.notna()
    folder = storage.join(root, IMAGE_DIR)
    rejects = tuple(Reject(i, storage.join(folder, f"{i}.jpg"), "missing image file")
                    for i in frame.loc[~present, "image_id"])
    kept = frame.loc[present].copy()
    kept.insert(1, "uri", [storage.join(folder, n) for n in names[present]])
    return kept.reset_index(drop=True), rejects


def load_isic(root: str, check_images: bool = True) -> Manifest:
    """Read the ISIC 2019 layout at ``root`` into a Manifest.

    ``check_images=False`` trusts the tables (no listing of the image folder):
    URIs point where the images would be, and nothing is rejected for a missing file.
    """
    root = storage.absolute(root)  # image URIs are read later by other processes
    gt_uri, meta_uri = storage.join(root, GROUND_TRUTH), storage.join(root, METADATA)
    truth = read_table(gt_uri, ("image", *CLASSES))
    meta = read_table(meta_uri, METADATA_COLUMNS)
    truth["image"] = truth["image"].str.strip()
    meta["image"] = meta["image"].str.strip()
    _check_unique(truth, gt_uri)
    _check_unique(meta, meta_uri)
    labels = _one_hot_labels(truth, gt_uri)
    known = labels != UNKNOWN_CLASS
    ids = truth.loc[known, "image"].reset_index(drop=True)
    frame = pd.concat([
        pd.DataFrame({"image_id": ids, "label": labels[known].to_numpy()}),
        _metadata_columns(meta, ids)], axis=1)
    frame.insert(2, "label_idx", frame["label"].map(CLASS_INDEX).astype("int64"))
    frame, rejects = _attach_images(frame, root, check_images)
    logger.info("loaded %d images from %s (%d rejected, %d UNK dropped)",
                len(frame), root, len(rejects), int((~known).sum()))
    return Manifest(root=root, frame=frame[list(MANIFEST_COLUMNS)], rejects=rejects,
                    unk_dropped=int((~known).sum()))
