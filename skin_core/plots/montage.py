"""Cluster montage (the paper's Fig. 5): one row of thumbnails per cluster with its size and class mix.

A user reads it to see what each teacher cluster gathered (hair, rulers,
lighting, dark borders) before trusting the cluster-aware partition.  Drawn on a
bare ``matplotlib.figure.Figure`` with the Agg canvas, so no display is needed.
"""

from __future__ import annotations

import logging
from collections import Counter
from pathlib import Path
from typing import Sequence

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

logger = logging.getLogger(__name__)

DPI = 100  # 1 inch = 100 px, so the layout below is in exact pixels
CAPTION_PX = 300
TITLE_PX = 40
GAP = 2  # px of background between thumbnails, in thumbnail pixels
BACKGROUND = 255


def montage_size(n_clusters: int, per_row: int, thumb_px: int) -> tuple[int, int]:
    """(width, height) in pixels of the PNG ``cluster_montage`` writes."""
    return CAPTION_PX + per_row * thumb_px, TITLE_PX + n_clusters * thumb_px


def class_mix(labels: Sequence[str], top: int = 3) -> str:
    """``"NV 60% MEL 25% BKL 9%"``: the ``top`` most frequent labels with their share (ties by name)."""
    counts = sorted(Counter(labels).items(), key=lambda kv: (-kv[1], kv[0]))[:top]
    return " ".join(f"{name} {100 * n / len(labels):.0f}%" for name, n in counts)


def row_members(clusters: np.ndarray, cluster: int, per_row: int, distances: np.ndarray | None) -> np.ndarray:
    """Indices shown for one cluster: the ``per_row`` closest to the centroid, else the first ones."""
    members = np.flatnonzero(clusters == cluster)
    if distances is not None:
        members = members[np.argsort(distances[members], kind="stable")]
    return members[:per_row]


def row_strip(images: Sequence[np.ndarray], members: np.ndarray, per_row: int) -> np.ndarray:
    """One row of thumbnails side by side with a gap; empty cells stay background."""
    h, w = images[0].shape[:2]
    strip = np.full((h + GAP, per_row * (w + GAP), 3), BACKGROUND, dtype=np.uint8)
    for slot, idx in enumerate(members):
        x = slot * (w + GAP)
        strip[GAP // 2:GAP // 2 + h, x + GAP // 2:x + GAP // 2 + w] = images[idx][..., :3]
    return strip


def check_montage_inputs(images: Sequence[np.ndarray], clusters: np.ndarray, labels: Sequence[str],
                         distances: np.ndarray | None) -> None:
    """Equal lengths, equal-size RGB uint8 thumbnails."""
    lengths = {len(images), len(clusters), len(labels)} | ({len(distances)} if distances is not None else set())
    if len(lengths) != 1 or not images:
        raise ValueError(f"images, clusters, labels (and distances) must be equally long and non-empty; "
                         f"got lengths {sorted(lengths)}")
    shapes = {np.shape(im) for im in images}
    if len(shapes) != 1 or len(next(iter(shapes))) != 3 or next(iter(shapes))[2] < 3:
        raise ValueError(f"thumbnails must be RGB (H, W, 3) of one size; got shapes {sorted(shapes)[:3]}")
    if any(np.asarray(im).dtype != np.uint8 for im in images):
        raise ValueError("thumbnails must be uint8")


def cluster_montage(images: Sequence[np.ndarray], clusters: np.ndarray, labels: Sequence[str], *,
                    out_path: str | Path, per_row: int = 12, distances: np.ndarray | None = None,
                    thumb_px: int = 64, title: str = "Teacher clusters",
                    population: tuple[np.ndarray, Sequence[str]] | None = None) -> Path:
    """Write a PNG with one row per cluster (sorted ids) and a caption ``C3 n=57`` / class mix on its left.

    ``distances`` (one per image, to its cluster centroid) picks the most typical
    thumbnails; without it the first ``per_row`` of each cluster are shown.  The
    PNG is ``montage_size(n_clusters, per_row, thumb_px)`` pixels.  Returns the path.
    ``population`` gives every image's (cluster, label) for the captions' size and
    class mix where ``images`` is only the sample shown.
    """
    clusters = np.asarray(clusters)
    dist = None if distances is None else np.asarray(distances, dtype=float)
    check_montage_inputs(images, clusters, labels, dist)
    ids = [int(c) for c in np.unique(clusters)]
    mosaic = np.concatenate([row_strip(images, row_members(clusters, c, per_row, dist), per_row) for c in ids])
    # captions describe the whole cluster: ``population`` = (every image's cluster, its label) when the
    # thumbnails are only a sample
    every_cluster, every_label = (clusters, labels) if population is None else (np.asarray(population[0]),
                                                                                 population[1])
    members = {c: [every_label[i] for i in np.flatnonzero(every_cluster == c)] for c in ids}
    fig = draw_montage(mosaic, members, per_row, thumb_px, title)
    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=DPI, format="png")
    logger.info("cluster montage of %d clusters written to %s", len(ids), out)
    return out


def draw_montage(mosaic: np.ndarray, members: dict[int, list[str]], per_row: int, thumb_px: int,
                 title: str) -> Figure:
    """Figure of exactly ``montage_size`` pixels: title band on top, captions left, mosaic right."""
    width, height = montage_size(len(members), per_row, thumb_px)
    fig = Figure(figsize=(width / DPI, height / DPI), dpi=DPI, facecolor="white")
    FigureCanvasAgg(fig)
    grid = fig.add_axes((CAPTION_PX / width, 0, 1 - CAPTION_PX / width, 1 - TITLE_PX / height))
    grid.imshow(mosaic, aspect="auto", interpolation="antialiased")  # stretches each cell to thumb_px
    grid.set_axis_off()
    for row, (cluster, labels) in enumerate(members.items()):
        add_caption(fig, row, cluster, labels, thumb_px, height)
    fig.text(0.5, 1 - TITLE_PX / 2 / height, title, ha="center", va="center", fontsize=14, weight="bold")
    return fig


def add_caption(fig: Figure, row: int, cluster: int, labels: list[str], thumb_px: int, height: int) -> None:
    """Two right-aligned lines left of a row: ``C3  n=57`` (bold) and the class mix."""
    y = 1 - (TITLE_PX + (row + 0.5) * thumb_px) / height
    x = (CAPTION_PX - 10) / fig.bbox.width
    size = max(7.0, min(11.0, thumb_px / 6))  # two lines must fit in one thumbnail's height
    fig.text(x, y, f"C{cluster}  n={len(labels)}", ha="right", va="bottom", fontsize=size, weight="bold")
    fig.text(x, y, class_mix(labels), ha="right", va="top", fontsize=size)
