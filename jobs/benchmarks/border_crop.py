"""Measurement: what each border crop (``preprocess.border_crop``) keeps and what it leaves, to choose the default.

* Synthetic set (the generator knows the lesion): of the images with a vignette,
  the share of lesion pixels that reach the network input unchanged (not cut
  away, not filled), per crop and resize mode, and how many images lose more
  than a tenth of their lesion.
* Real BCN20000 images (the 96 of the shared sample, 1024×1024, most with a round
  field of view on black): the near-black share of the network input, and the
  share of the field of view that reaches it.

"none" is border removal switched off: everything kept, black included.

    python jobs/benchmarks/border_crop.py --synthetic-n 400 --data ../shared/data/isic2019/sample
"""

from __future__ import annotations

import argparse
import logging
import tempfile
from pathlib import Path
from typing import Iterator

import cv2
import numpy as np

from skin_core.data.isic import load_isic, lesion_mask_uri
from skin_core.preprocessing import decode_image, field_of_view, preprocess_image, remove_border
from skin_core.preprocessing.border import CROPS, BorderResult
from skin_core.preprocessing.resize import to_square
from skin_core.synth import generate_dataset

if __package__:  # imported as benchmarks.border_crop
    from .table import print_rows, row
else:  # run as a script
    from table import print_rows, row

NAME = "border_crop"
RESIZE_MODES = ("center_crop", "stretch")
NEAR_BLACK = (20, 40)  # every channel below this level


def crop_with(rgb: np.ndarray, crop: str) -> BorderResult:
    """``remove_border`` with ``crop``; ``none`` leaves the image whole."""
    h, w = rgb.shape[:2]
    return BorderResult(rgb, (0, 0, w, h), False) if crop == "none" else remove_border(rgb, crop=crop)


def reaching_input(shape: tuple[int, int], result: BorderResult, fov: np.ndarray | None, crop: str,
                   mode: str) -> np.ndarray:
    """H×W bool: the original pixels that reach the network input as they were (not cut away, not filled)."""
    h, w = shape
    x0, y0, x1, y1 = result.box
    index = np.arange(h * w, dtype=np.int64).reshape(h, w)[y0:y1, x0:x1]
    kept = np.zeros(h * w, bool)
    kept[to_square(index, mode).ravel()] = True  # the same geometry as the image's square
    kept = kept.reshape(h, w)
    if crop == "bbox_fill" and result.had_border and fov is not None:
        kept &= fov  # the outside of the field of view is filled with its mean colour
    return kept


def near_black(rgb: np.ndarray, level: int) -> float:
    return float((rgb < level).all(axis=2).mean())


def synthetic_lesion_kept(n: int, size: int, seed: int) -> dict[tuple[str, str], list[float]]:
    """(crop, resize mode) → per vignetted image, the share of its lesion pixels that reach the input."""
    kept: dict[tuple[str, str], list[float]] = {}
    with tempfile.TemporaryDirectory() as folder:
        generate_dataset(folder, n=n, size=size, seed=seed)
        for uri in load_isic(folder).frame["uri"]:
            rgb = decode_image(Path(uri).read_bytes())
            fov = field_of_view(rgb)
            if fov is None:  # no vignette: every crop leaves the image alone
                continue
            mask = cv2.imread(lesion_mask_uri(folder, Path(uri).stem), cv2.IMREAD_GRAYSCALE) > 0
            for crop in ("none", *CROPS):
                result = crop_with(rgb, crop)
                for mode in RESIZE_MODES:
                    region = reaching_input(mask.shape, result, fov, crop, mode)
                    kept.setdefault((crop, mode), []).append(float((mask & region).sum() / max(1, mask.sum())))
    return kept


def bcn_images(data: str) -> Iterator[bytes]:
    frame = load_isic(data).frame
    for uri in frame.loc[frame["origin"] == "BCN", "uri"]:
        yield Path(uri).read_bytes()


def bcn_black_and_fov(data: str, mode: str = "stretch", size: int = 224) -> tuple[int, int, dict]:
    """Images, of which with a field of view found, and crop → {measure: per-image values}."""
    figures: dict[str, dict[str, list[float]]] = {c: {} for c in ("none", *CROPS)}
    images = with_fov = 0
    for data_bytes in bcn_images(data):
        images += 1
        rgb = decode_image(data_bytes)
        fov = field_of_view(rgb)
        with_fov += fov is not None
        for crop in figures:
            out = preprocess_image(data_bytes, size=size, remove_borders=crop != "none",
                                   border_crop=crop if crop != "none" else "inscribed", mode=mode).image
            for level in NEAR_BLACK:
                figures[crop].setdefault(f"near-black (< {level}) share of the input", []).append(
                    near_black(out, level))
            if fov is not None:
                region = reaching_input(fov.shape, crop_with(rgb, crop), fov, crop, mode)
                figures[crop].setdefault("field of view kept", []).append(float((fov & region).sum() / fov.sum()))
    return images, with_fov, figures


def measure(synthetic_n: int = 400, synthetic_size: int = 256, seed: int = 0, data: str = "") -> list[dict]:
    rows = []
    lesion = synthetic_lesion_kept(synthetic_n, synthetic_size, seed)
    vignetted = len(next(iter(lesion.values()), []))
    for (crop, mode), values in lesion.items():
        values = np.array(values)
        label = f"synthetic ({vignetted} vignetted of {synthetic_n}): {crop}, {mode}"
        rows.append(row(NAME, f"{label}: lesion kept, mean", float(values.mean()), "share"))
        rows.append(row(NAME, f"{label}: images losing > 10% of the lesion", float((values < 0.9).mean()), "share"))
    if data:
        images, with_fov, figures = bcn_black_and_fov(data)
        for crop, measures in figures.items():
            for name, values in measures.items():
                rows.append(row(NAME, f"BCN ({with_fov} with a field of view of {images}): {crop}, stretch: {name}",
                                float(np.mean(values)), "share"))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--synthetic-n", type=int, default=400)
    parser.add_argument("--synthetic-size", type=int, default=256)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data", default="", help="an ISIC-layout folder with BCN images (the shared sample)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    print_rows(measure(args.synthetic_n, args.synthetic_size, args.seed, args.data))


if __name__ == "__main__":
    main()
