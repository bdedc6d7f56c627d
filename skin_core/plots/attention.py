"""Attention panel: where the teacher and the students look, layer by layer, over one input image.

Left, the preprocessed input; right, one row per layer and one column per
model, each map ``Q`` (:func:`skin_core.attention.attention_maps`) upsampled
bilinearly to the image and laid over it.  A row shares one colour scale,
from 0 (no attention) to the largest value of its maps, so one colour is one
``Q`` value across the models of a layer; each row has its colour bar.  A
student's panel shows its per-image AT distance to the teacher
(:func:`skin_core.attention.at_distances`).  The numbers behind the figure are
written next to the PNG as JSON.  :func:`lesion_focus_plot` draws how much of
each model's attention falls inside the lesion, per layer.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Mapping

import cv2
import numpy as np
import pandas as pd
from matplotlib import colormaps
from matplotlib.axes import Axes
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize
from matplotlib.figure import Figure, SubFigure

from skin_core.layers import LAYERS
from skin_core.plots.evaluation import MODEL_COLOURS, new_figure, save

logger = logging.getLogger(__name__)

Maps = Mapping[str, Mapping[str, np.ndarray]]  # model -> layer -> h×w map
Distances = Mapping[str, Mapping[str, float]]  # student -> layer -> AT distance to the teacher
CELL_IN = 2.3  # inches per map panel
INPUT_IN = 3.2  # inches for the input image on the left
OVERLAY_ALPHA = 0.55
CMAP = "inferno"


def attention_panel(image_uint8: np.ndarray, maps: Maps, distances: Distances, out_path: str | Path,
                    title: str = "") -> Path:
    """Write the panel PNG and ``out_path.with_suffix('.json')``; returns the PNG path.

    The JSON holds ``{"title", "layers": {layer: {"vmin", "vmax", "maps": {model:
    nested lists}, "distances": {model: float}}}}``.
    """
    fig = draw_attention_panel(image_uint8, maps, distances, title)
    png = save(fig, out_path, "attention panel")
    write_panel_json(png.with_suffix(".json"), maps, distances, title)
    return png


def draw_attention_panel(image_uint8: np.ndarray, maps: Maps, distances: Distances, title: str = "") -> Figure:
    """The figure of :func:`attention_panel`; each overlay image is labelled ``"<layer>/<model>"``."""
    check_panel_inputs(image_uint8, maps, distances)
    layers = panel_layers(maps)
    fig = new_figure(INPUT_IN + CELL_IN * len(maps) + 0.9, CELL_IN * len(layers) + 0.5)
    left, right = fig.subfigures(1, 2, width_ratios=(INPUT_IN, CELL_IN * len(maps) + 0.9))
    ax = left.subplots()
    ax.imshow(image_uint8)
    ax.set_title("input", fontsize=10)
    ax.set_axis_off()
    grid = right.subplots(len(layers), len(maps), squeeze=False)
    for r, layer in enumerate(layers):
        draw_row(right, list(grid[r]), image_uint8, maps, distances, layer, header=r == 0)
    if title:
        fig.suptitle(title, fontsize=12, weight="bold")
    return fig


def draw_row(fig: SubFigure, axes: list[Axes], image: np.ndarray, maps: Maps, distances: Distances, layer: str,
             header: bool) -> None:
    """One layer across the models, on one colour scale with its colour bar; model names when ``header``."""
    norm = Normalize(0.0, row_scale(maps, layer))
    for ax, model in zip(axes, maps):
        map_panel(ax, image, maps[model].get(layer), norm, f"{layer}/{model}")
        ax.set_title(panel_title(model if header else "", distances.get(model, {}).get(layer)), fontsize=9)
    axes[0].set_ylabel(layer, fontsize=10)
    fig.colorbar(ScalarMappable(norm, CMAP), ax=axes, shrink=0.85, label="Q")


def check_panel_inputs(image: np.ndarray, maps: Maps, distances: Distances) -> None:
    """ValueError for a bad image, an unknown layer, a bad map, or a distance without its map."""
    if np.asarray(image).dtype != np.uint8 or np.ndim(image) != 3 or np.shape(image)[2] != 3:
        raise ValueError(f"image_uint8 must be an H×W×3 uint8 array, got shape {np.shape(image)}")
    present = {k for per_model in maps.values() for k in per_model}
    if not present or present - set(LAYERS):
        raise ValueError(f"maps must hold at least one map, of layers {LAYERS} only; got {sorted(present)}")
    for model, per_model in maps.items():
        for layer, q in per_model.items():
            if np.ndim(q) != 2 or not np.isfinite(q).all() or (np.asarray(q) < 0).any():
                raise ValueError(f"maps[{model!r}][{layer!r}] must be a finite non-negative h×w map")
    unknown = [f"{m}/{k}" for m, per_model in distances.items() for k in per_model if k not in maps.get(m, {})]
    if unknown:
        raise ValueError(f"distances given for maps that are not drawn: {unknown}")


def panel_layers(maps: Maps) -> list[str]:
    """The layers any model has a map of, in ``LAYERS`` order: the panel's rows."""
    return [k for k in LAYERS if any(k in per_model for per_model in maps.values())]


def row_scale(maps: Maps, layer: str) -> float:
    """The row's colour-scale maximum: the largest value of ``layer``'s maps over the models (1 if all 0).

    Bilinear upsampling never leaves a map's range, so this bounds the overlays too.
    """
    top = max(float(np.max(per_model[layer])) for per_model in maps.values() if layer in per_model)
    return top if top > 0 else 1.0


def map_panel(ax: Axes, image: np.ndarray, q: np.ndarray | None, norm: Normalize, label: str) -> None:
    """The image with ``q`` upsampled bilinearly over it; a note where the model has no such map."""
    ax.imshow(image)
    ax.set_xticks([])
    ax.set_yticks([])
    if q is None:
        ax.text(0.5, 0.5, "not computed", ha="center", va="center", transform=ax.transAxes, color="white")
        return
    h, w = image.shape[:2]
    up = cv2.resize(np.asarray(q, np.float32), (w, h), interpolation=cv2.INTER_LINEAR)
    ax.imshow(up, cmap=colormaps[CMAP], norm=norm, alpha=OVERLAY_ALPHA, label=label)


def panel_title(model: str, distance: float | None) -> str:
    """``"model\\nAT 1.2e-04"``; either part may be absent (the teacher has no distance)."""
    parts = [model] if model else []
    if distance is not None:
        parts.append(f"AT {distance:.1e}")
    return "\n".join(parts)


def write_panel_json(path: Path, maps: Maps, distances: Distances, title: str) -> Path:
    """The numbers behind the panel: per layer its colour scale, every model's map and distance."""
    rows = {layer: {"vmin": 0.0, "vmax": row_scale(maps, layer),
                    "maps": {m: np.asarray(q[layer], float).tolist() for m, q in maps.items() if layer in q},
                    "distances": {m: float(d[layer]) for m, d in distances.items() if layer in d}}
            for layer in panel_layers(maps)}
    path.write_text(json.dumps({"title": title, "layers": rows}, indent=1))
    logger.info("attention panel data written to %s", path)
    return path


def lesion_focus_plot(focus: pd.DataFrame, out_path: str | Path, reference: str = "",
                      title: str = "Attention mass inside the lesion") -> Path:
    """Grouped bars: per layer (x), each model's mean share of attention inside the lesion mask.

    ``focus`` is model × layer (:func:`skin_core.attention.lesion_focus_table`);
    its ``reference`` row (the lesion's area, what a uniform map gets) is drawn
    as a dashed step per layer instead of bars: a bar above it means the model
    looks at the lesion more than chance.
    """
    models = [m for m in focus.index if m != reference]
    layers = list(focus.columns)
    if not models or not layers:
        raise ValueError("lesion focus table is empty: no model and layer to draw")
    fig = new_figure(1.4 + 1.1 * len(layers) * max(1, len(models)) / 2.5, 3.6)
    ax = fig.subplots()
    width = 0.8 / len(models)
    x = np.arange(len(layers))
    for i, (model, colour) in enumerate(zip(models, MODEL_COLOURS * (1 + len(models) // len(MODEL_COLOURS)))):
        ax.bar(x - 0.4 + width * (i + 0.5), focus.loc[model, layers].to_numpy(float), width, label=model,
               color=colour)
    if reference in focus.index:
        for j, value in enumerate(focus.loc[reference, layers].to_numpy(float)):
            ax.hlines(value, j - 0.45, j + 0.45, colors="black", linestyles="--", linewidth=1.2,
                      label=reference if j == 0 else None)
    ax.set_xticks(x, layers)
    ax.set_ylim(0, 1)
    ax.set_ylabel("share of attention in the lesion")
    ax.set_title(title, fontsize=11)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False)
    return save(fig, out_path, "lesion focus figure")
