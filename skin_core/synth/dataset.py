"""Sampling plan and on-disk layout of the synthetic ISIC 2019 dataset.

:func:`plan_dataset` is a pure function of ``(n, seed)`` that decides every
image's class, origin, lesion, patient metadata and acquisition effects;
:func:`generate_dataset` renders that plan into the ISIC 2019 challenge layout.
Acquisition effects depend only on the origin, and origins are drawn
independently of the class, so nothing but the lesion itself carries the label.

Unlike the real challenge data, every synthetic image also gets its lesion
mask, ``ISIC_2019_Training_Masks/<image>.png`` (see
:func:`skin_core.data.isic.lesion_mask_uri`), for measuring where a model looks.
"""

from __future__ import annotations

import csv
import logging
import math
import os
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from numbers import Integral
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
from tqdm import tqdm

from skin_core.classes import CLASSES, ORIGINS, UNKNOWN_CLASS
from skin_core.data.isic import GROUND_TRUTH as GROUND_TRUTH_CSV
from skin_core.data.isic import IMAGE_DIR as INPUT_DIR
from skin_core.data.isic import MASK_DIR, lesion_mask_uri
from skin_core.data.isic import METADATA as METADATA_CSV
from skin_core.data.isic import METADATA_COLUMNS
from skin_core.synth.acquisition import LIGHTINGS, SKIN_TONES, apply_acquisition, skin_field
from skin_core.synth.lesion import composite, pose_lesion, render_lesion, sample_lesion

logger = logging.getLogger(__name__)

FACTORS_CSV = "synth_factors.csv"
GROUND_TRUTH_COLUMNS = ("image", *CLASSES, UNKNOWN_CLASS)
FACTOR_COLUMNS = ("image", "label", "origin", "border", "hair", "ruler", "marker", "lighting", "lesion_id", "skin_tone")

# ISIC 2019 training-set frequencies, which the synthetic set reproduces.
ISIC_CLASS_COUNTS = {"MEL": 4522, "NV": 12875, "BCC": 3323, "AK": 867, "BKL": 2624, "DF": 239, "VASC": 253, "SCC": 628}
ISIC_ORIGIN_COUNTS = {"HAM": 10015, "BCN": 12413, "MSK": 819, "unknown": 2084}
MIN_PER_CLASS = 3
MIN_IMAGES = MIN_PER_CLASS * len(CLASSES)
MIN_SIZE = 32
# A pixel is lesion where the posed layer's alpha exceeds this share of the lesion's opacity: the
# edge ramp crosses it exactly on the lesion's boundary, whatever the class (AK is only 0.4-0.6 opaque).
MASK_LEVEL = 0.5
FIRST_IMAGE_ID = 9_000_000
JPEG_QUALITY = 90

_LESION_PREFIX = {"HAM": "HAM_", "BCN": "BCN_", "MSK": "MSK4_"}
_REPEAT_RATE = 0.15  # share of (known-origin) lesions photographed 2-3 times
_MIN_CLASS_FOR_REPEATS = 10
# origin -> P(vignette), P(hair), P(ruler), P(marker): each collection's own habits.
_EFFECT_RATES = {
    "HAM": (0.05, 0.30, 0.20, 0.10),
    "BCN": (0.90, 0.30, 0.05, 0.05),
    "MSK": (0.05, 0.25, 0.40, 0.15),
    "unknown": (0.10, 0.30, 0.30, 0.10),
}
_LIGHTING_WEIGHTS = {  # in LIGHTINGS order
    "HAM": (0.45, 0.35, 0.10, 0.10),
    "BCN": (0.40, 0.10, 0.40, 0.10),
    "MSK": (0.40, 0.10, 0.10, 0.40),
    "unknown": (0.25, 0.25, 0.25, 0.25),
}
_SKIN_TONE_WEIGHTS = (0.35, 0.40, 0.18, 0.07)
_SITES = ("anterior torso", "posterior torso", "head/neck", "lower extremity", "upper extremity",
          "palms/soles", "oral/genital", "lateral torso")
_SITE_WEIGHTS = np.array([6915, 2787, 4587, 4990, 2910, 398, 59, 54], float)
_SUN_EXPOSED = {"BCC", "AK", "SCC"}  # keratinocyte cancers favour the head and neck
_AGE_MEAN = {"MEL": 60, "NV": 42, "BCC": 67, "AK": 70, "BKL": 60, "DF": 47, "VASC": 50, "SCC": 70}
_MISSING_RATE = {"age": 0.02, "site": 0.10, "sex": 0.015}
# Independent random streams: each consumer of randomness gets its own key.
_PLAN_STREAM, _IMAGE_STREAM, _LESION_STREAM = 0, 1, 2


@dataclass(frozen=True)
class SynthReport:
    """What :func:`generate_dataset` wrote."""

    n_images: int
    class_counts: dict[str, int]
    origin_counts: dict[str, int]
    n_lesions: int
    out_dir: Path


@dataclass(frozen=True)
class SynthImage:
    """One rendered image (uint8 S×S×3 RGB) and its lesion mask (bool S×S)."""

    rgb: np.ndarray
    mask: np.ndarray


def _rng(seed: int, *key: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([seed, *key]))


def _check_int(name: str, value: object, minimum: int, why: str) -> None:
    if isinstance(value, bool) or not isinstance(value, Integral):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name}={value} is too small: {why}")


def _check_plan_args(n: object, seed: object) -> None:
    _check_int("n", n, MIN_IMAGES, f"need at least {MIN_IMAGES} images ({MIN_PER_CLASS} per class)")
    _check_int("seed", seed, 0, "seeds are non-negative")


def allocate(total: int, weights: Sequence[float], floor: int) -> np.ndarray:
    """Split ``total`` into integers proportional to ``weights`` (largest remainder), none below ``floor``."""
    weights = np.asarray(weights, float)
    pinned = np.zeros(len(weights), bool)
    while True:
        free = total - floor * int(pinned.sum())
        share = np.where(pinned, 0.0, weights)
        share = share / share.sum() * free
        counts = np.floor(share).astype(int)
        counts[np.argsort(counts - share, kind="stable")[: free - counts.sum()]] += 1
        counts[pinned] = floor
        low = ~pinned & (counts < floor)
        if not low.any():
            return counts
        pinned |= low


def class_counts(n: int) -> dict[str, int]:
    """Images per class: ISIC 2019's imbalance, with at least max(3, 2% of n) per class."""
    floor = max(MIN_PER_CLASS, math.ceil(0.02 * n))
    counts = allocate(n, [ISIC_CLASS_COUNTS[c] for c in CLASSES], floor)
    return dict(zip(CLASSES, counts.tolist()))


def origin_counts(n: int) -> dict[str, int]:
    """Images per origin in ISIC proportions, every origin present."""
    counts = allocate(n, [ISIC_ORIGIN_COUNTS[o] for o in ORIGINS], 1)
    return dict(zip(ORIGINS, counts.tolist()))


def _lesion_sizes(count: int, repeatable: bool, rng: np.random.Generator) -> Iterable[int]:
    """Images per lesion for ``count`` images of one class and origin."""
    while count > 0:
        size = 1
        if repeatable and rng.random() < _REPEAT_RATE:
            size = min(count, int(rng.choice([2, 3], p=[0.7, 0.3])))
        count -= size
        yield size


def _group_lesions(labels: np.ndarray, origins: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Lesion key per image; a lesion's images share class and origin (unknown origin: one each).

    A class with fewer than ``_MIN_CLASS_FOR_REPEATS`` images keeps one image per
    lesion: a split by lesion needs several lesions of every class.
    """
    keys = np.empty(len(labels), int)
    next_key = 0
    class_sizes = dict(zip(*np.unique(labels, return_counts=True)))
    for label, origin in sorted(set(zip(labels.tolist(), origins.tolist()))):
        members = np.flatnonzero((labels == label) & (origins == origin))
        repeatable = origin != "unknown" and class_sizes[label] >= _MIN_CLASS_FOR_REPEATS
        for size in _lesion_sizes(len(members), repeatable, rng):
            keys[members[:size]] = next_key
            members, next_key = members[size:], next_key + 1
    return keys


def _lesion_ids(origins: Sequence[str], keys: Sequence[int]) -> list[str]:
    """ISIC-style lesion ids, numbered per origin in order of first appearance; empty for unknown."""
    ids: dict[int, str] = {}
    per_origin = dict.fromkeys(ORIGINS, 0)
    for origin, key in zip(origins, keys):
        if origin != "unknown" and key not in ids:
            per_origin[origin] += 1
            ids[key] = f"{_LESION_PREFIX[origin]}{per_origin[origin]:07d}"
    return [ids.get(key, "") for key in keys]


def _acquisition_factors(origins: pd.Series, rng: np.random.Generator) -> pd.DataFrame:
    """Per-image vignette/hair/ruler/marker/lighting, drawn from the origin's habits only."""
    rates = np.array([_EFFECT_RATES[o] for o in origins])
    flags = rng.random(rates.shape) < rates
    lighting = [LIGHTINGS[rng.choice(len(LIGHTINGS), p=_LIGHTING_WEIGHTS[o])] for o in origins]
    table = pd.DataFrame(flags, columns=["border", "hair", "ruler", "marker"], index=origins.index)
    table["lighting"] = lighting
    return table


def _patient_metadata(labels: Sequence[str], rng: np.random.Generator) -> pd.DataFrame:
    """Age, sex, site and skin tone of each lesion's patient (one row per lesion)."""
    n = len(labels)
    age = np.clip(5 * np.round(rng.normal([_AGE_MEAN[c] for c in labels], 14) / 5), 0, 85).astype(int)
    sites = [_SITES[rng.choice(len(_SITES), p=_site_weights(c))] for c in labels]
    sex = np.where(rng.random(n) < 0.53, "male", "female")
    table = pd.DataFrame({
        "age_approx": pd.array(age, dtype="Int64"), "anatom_site_general": sites, "sex": sex,
        "skin_tone": [SKIN_TONES[i] for i in rng.choice(len(SKIN_TONES), n, p=_SKIN_TONE_WEIGHTS)],
    })
    table.loc[rng.random(n) < _MISSING_RATE["age"], "age_approx"] = pd.NA
    table.loc[rng.random(n) < _MISSING_RATE["site"], "anatom_site_general"] = ""
    table.loc[rng.random(n) < _MISSING_RATE["sex"], "sex"] = ""
    return table


def _site_weights(label: str) -> np.ndarray:
    weights = _SITE_WEIGHTS.copy()
    if label in _SUN_EXPOSED:
        weights[_SITES.index("head/neck")] *= 3
    return weights / weights.sum()


def plan_dataset(n: int = 600, seed: int = 0) -> pd.DataFrame:
    """Every image's factors, in image order: the pure sampling plan that :func:`generate_dataset` renders.

    Columns: image, label, origin, lesion_key, lesion_id, border, hair, ruler, marker,
    lighting, age_approx, anatom_site_general, sex, skin_tone.
    """
    _check_plan_args(n, seed)
    rng = _rng(seed, _PLAN_STREAM)
    labels = rng.permutation(np.repeat(CLASSES, list(class_counts(n).values())))
    origins = rng.permutation(np.repeat(ORIGINS, list(origin_counts(n).values())))
    keys = _group_lesions(labels, origins, rng)
    order = rng.permutation(n)  # scatter a lesion's images through the id range
    plan = pd.DataFrame({"label": labels[order], "origin": origins[order], "lesion_key": keys[order]}, dtype=object)
    plan["lesion_key"] = plan["lesion_key"].astype(int)
    plan.insert(0, "image", [f"ISIC_{FIRST_IMAGE_ID + i}" for i in range(n)])
    plan["lesion_id"] = _lesion_ids(plan["origin"].tolist(), plan["lesion_key"].tolist())
    plan = plan.join(_acquisition_factors(plan["origin"], rng))
    first = plan.drop_duplicates("lesion_key").sort_values("lesion_key")
    patients = _patient_metadata(first["label"].tolist(), rng).set_index(first["lesion_key"].to_numpy())
    return plan.join(patients, on="lesion_key")


def render_image(row, index: int, size: int, seed: int) -> SynthImage:
    """The image of one plan row (``index`` is its position in the plan) and its lesion mask.

    The mask is where the posed lesion layer's alpha exceeds ``MASK_LEVEL`` times
    the lesion's opacity, i.e. inside its boundary.  The pose is the only
    geometry applied to the lesion (no later crop or resize), and the
    acquisition effects (hair, ink, vignette) cover it without moving it.
    """
    lesion = sample_lesion(row.label, _rng(seed, _LESION_STREAM, int(row.lesion_key)))
    rng = _rng(seed, _IMAGE_STREAM, index)
    skin = skin_field(size, row.skin_tone, rng)
    posed = pose_lesion(render_lesion(lesion, size), rng)
    rgb = apply_acquisition(
        composite(skin, posed), rng, hair=bool(row.hair), ruler=bool(row.ruler), marker=bool(row.marker),
        lighting=row.lighting, border=bool(row.border),
    )
    return SynthImage(rgb, posed[..., 3] > MASK_LEVEL * lesion.opacity)


def _write_image(path: Path, pixels: np.ndarray, *params: int) -> None:
    """Encode ``pixels`` (BGR or one channel) in the format of ``path``'s suffix and write them."""
    ok, buf = cv2.imencode(path.suffix, np.ascontiguousarray(pixels), list(params))
    if not ok:
        raise RuntimeError(f"{path.suffix} encoding failed for {path.name}")
    path.write_bytes(buf.tobytes())


def _write_csv(path: Path, header: Sequence[str], rows: Iterable[Sequence[str]]) -> None:
    """Write a CSV under a temporary name and move it into place, so it is never seen half-written."""
    tmp = path.with_name(path.name + ".part")
    with open(tmp, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)
    os.replace(tmp, path)


def _ground_truth_rows(plan: pd.DataFrame) -> Iterable[list[str]]:
    for image, label in zip(plan["image"], plan["label"]):
        yield [image, *("1.0" if c == label else "0.0" for c in CLASSES), "0.0"]


def _metadata_rows(plan: pd.DataFrame) -> Iterable[list[str]]:
    for row in plan.itertuples(index=False):
        age = "" if pd.isna(row.age_approx) else str(int(row.age_approx))
        yield [row.image, age, row.anatom_site_general, row.lesion_id, row.sex]


def _write_tables(out: Path, plan: pd.DataFrame) -> None:
    """The tables, ground truth last: its presence means the dataset is complete."""
    factors = plan[list(FACTOR_COLUMNS)].astype(str).itertuples(index=False)
    _write_csv(out / FACTORS_CSV, FACTOR_COLUMNS, factors)
    _write_csv(out / METADATA_CSV, METADATA_COLUMNS, _metadata_rows(plan))
    _write_csv(out / GROUND_TRUTH_CSV, GROUND_TRUTH_COLUMNS, _ground_truth_rows(plan))


def _report(plan: pd.DataFrame, out: Path) -> SynthReport:
    by_class = plan["label"].value_counts()
    by_origin = plan["origin"].value_counts()
    return SynthReport(
        n_images=len(plan),
        class_counts={c: int(by_class.get(c, 0)) for c in CLASSES},
        origin_counts={o: int(by_origin.get(o, 0)) for o in ORIGINS},
        n_lesions=int(plan["lesion_key"].nunique()),
        out_dir=out,
    )


def generate_dataset(out_dir: str | Path, n: int = 600, size: int = 256, seed: int = 0) -> SynthReport:
    """Render ``n`` synthetic dermoscopy images of ``size`` px into ``out_dir`` in the ISIC 2019 layout.

    Writes ``ISIC_2019_Training_Input/<image>.jpg``, the lesion masks
    ``ISIC_2019_Training_Masks/<image>.png`` (same size, 255 on the lesion, else
    0), the ground-truth and metadata tables and ``synth_factors.csv``.
    """
    if "://" in str(out_dir):
        raise ValueError(f"out_dir must be a local folder, got {out_dir!r}: generate locally, then upload")
    _check_int("size", size, MIN_SIZE, f"images must be at least {MIN_SIZE} px")
    plan = plan_dataset(n, seed)
    out = Path(out_dir)
    images = out / INPUT_DIR
    images.mkdir(parents=True, exist_ok=True)
    (out / MASK_DIR).mkdir(exist_ok=True)
    for name in (GROUND_TRUTH_CSV, METADATA_CSV, FACTORS_CSV):  # stale tables would describe mixed images
        (out / name).unlink(missing_ok=True)
    start = time.perf_counter()
    rows = tqdm(plan.itertuples(index=False), total=len(plan), desc="synthetic images", unit="img", disable=None)
    for index, row in enumerate(rows):
        rendered = render_image(row, index, size, seed)
        _write_image(images / f"{row.image}.jpg", rendered.rgb[..., ::-1], cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY)
        # lossless PNG, 255 on the lesion
        _write_image(Path(lesion_mask_uri(out, row.image)), rendered.mask.astype(np.uint8) * np.uint8(255))
    _write_tables(out, plan)
    logger.info("synthetic ISIC: %d images of %d px in %.1f s -> %s", n, size, time.perf_counter() - start, out)
    return _report(plan, out)
