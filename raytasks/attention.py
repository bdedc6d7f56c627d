"""Where the teacher and the students look: attention panels, AT distances to the teacher and lesion focus.

Two ways in, one set of functions (:mod:`skin_core.attention`, drawn by
:mod:`skin_core.plots.attention`), so what is drawn is what the loss trains:

- the ``attention`` pipeline stage, after evaluation: every validation image
  goes through one Ray Data actor holding the teacher and every student (the
  per-image, per-layer AT distance to the teacher and, where the dataset has
  lesion masks, each model's share of attention inside the lesion), then the
  means per layer (``attention_distance.csv``, ``lesion_focus.csv`` and its
  figure) and a panel for a fixed, seeded choice of validation images;
- ``skin attention``: a panel for any image files, preprocessed as the
  student's model card says (``preprocess_with``, as in training).
"""

from __future__ import annotations

import logging
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
from ray.data.expressions import col
from torch import nn

from raytasks.actors import BOX, AttentionScorer, Network
from raytasks.partition import PartitionSummary, splits
from raytasks.preprocess import PreprocessSummary, read_shards, read_table
from raytasks.registry import resolve_model
from raytasks.runtime import map_with_models
from raytasks.stages import Stage, StageContext, StageOutput, load_output
from raytasks.student import StudentSummary
from raytasks.teacher import WEIGHTS as TEACHER_WEIGHTS
from raytasks.teacher import TeacherSummary, teacher_model
from skin_core import storage
from skin_core.attention import TEACHER, lesion_focus_table, mean_table, models_maps, one_image, teacher_distances
from skin_core.attention.scores import UNIFORM
from skin_core.classes import CLASSES
from skin_core.config import PipelineConfig
from skin_core.data.isic import lesion_mask_uri
from skin_core.layers import LAYERS, LayerSet
from skin_core.models.bundle import ModelCard, load_bundle
from skin_core.plots.attention import attention_panel, lesion_focus_plot
from skin_core.preprocessing import decode_pngs, preprocess_with

logger = logging.getLogger(__name__)

PER_CLASS = 2  # validation images drawn per class
PANEL_PREFIX = "attention_"
SCORES, DISTANCE, FOCUS = "attention_scores.csv", "attention_distance.csv", "lesion_focus.csv"
FOCUS_FIGURE, PANELS = "lesion_focus.png", "attention_panels.csv"


def teacher_network(teacher: StageOutput[TeacherSummary]) -> Network:
    return Network(teacher.file(TEACHER_WEIGHTS), teacher_model(teacher))


@dataclass(frozen=True)
class AttentionSummary:
    """Validation images scored, panels drawn, and the per-layer means of the two tables."""

    images: int
    masked: int  # of them with a lesion mask
    panels: int
    distance: dict  # {model: {layer: mean AT distance to the teacher}}
    lesion_focus: dict  # {model: {layer: mean share of attention inside the lesion}}; {} without masks


@dataclass(frozen=True)
class Panel:
    """One drawn panel: its PNG (the JSON with its numbers beside it) and each student's distances."""

    name: str
    uri: str
    distances: dict  # {model: {layer: AT distance to the teacher}}


def write_panels(models: dict[str, nn.Module], images: np.ndarray, names: Sequence[str], titles: Sequence[str],
                 out: str) -> list[Panel]:
    """One panel per image into ``out`` (local or s3://) as ``attention_<name>.png`` and ``.json``."""
    maps = models_maps(models, images)
    distances = teacher_distances(maps)
    panels = []
    with tempfile.TemporaryDirectory() as scratch:
        for i, (name, title) in enumerate(zip(names, titles)):
            file = f"{PANEL_PREFIX}{name}.png"
            attention_panel(images[i], one_image(maps, i), one_image(distances, i), Path(scratch) / file, title)
            panels.append(Panel(name, storage.join(out, file), one_image(distances, i)))
        storage.upload_tree(Path(scratch), out)
    return panels


# ---------------------------------------------------------------- the pipeline stage


def choose_images(table: pd.DataFrame, seed: int, per_class: int = PER_CLASS) -> pd.DataFrame:
    """``per_class`` rows of each class present, in class order, seeded; a BCN image first where the class has one.

    BCN images (dermoscopy with the scope's black border, other cameras) are
    where attention on the vignette or on rulers would show.
    """
    rng = np.random.default_rng(seed)
    picks = []
    for label in CLASSES:
        rows = table[table["label"] == label]
        rows = rows.iloc[rng.permutation(len(rows))]
        first = rows[rows["origin"] == "BCN"].head(1)
        picks.append(pd.concat([first, rows.drop(first.index)]).head(per_class))
    return pd.concat(picks) if picks else table.head(0)


def model_name(student: StageOutput[StudentSummary]) -> str:
    return LayerSet.parse(student.summary.variant).display_name


def score_validation(preprocessed: StageOutput, ids: list[str], networks: dict[str, Network], mask_root: str,
                     config: PipelineConfig) -> pd.DataFrame:
    """Per-image scores of every network on the images ``ids`` (one Ray Data pass)."""
    dataset = (read_shards(preprocessed, columns=["image_id", "image", *BOX])
               .filter(expr=col("image_id").is_in(ids)))
    scores = map_with_models(dataset, AttentionScorer, {"networks": networks, "mask_root": mask_root,
                                                        "preprocess": config.preprocess}, config.resources,
                             batch_size=32)
    return scores.sort_values("image_id", kind="stable").reset_index(drop=True)


def write_tables(scores: pd.DataFrame, context: StageContext) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The per-image scores, the mean distance table and, where there are masks, the lesion focus and its figure."""
    context.write_csv(SCORES, scores)
    distance = mean_table(scores, "at_distance")
    context.write_csv(DISTANCE, distance, index=True)
    focus = lesion_focus_table(scores)
    if not focus.empty:
        context.write_csv(FOCUS, focus, index=True)
        with tempfile.TemporaryDirectory() as scratch:
            figure = lesion_focus_plot(focus, Path(scratch) / FOCUS_FIGURE, reference=UNIFORM,
                                       title=f"Attention inside the lesion (validation, "
                                             f"{scores.dropna(subset=['lesion_share'])['image_id'].nunique()} images)")
            context.write_bytes(FOCUS_FIGURE, figure.read_bytes())
    return distance, focus


def stage_panels(preprocessed: StageOutput, networks: dict[str, Network], chosen: pd.DataFrame,
                 context: StageContext) -> int:
    """The chosen images' panels, and their list (image, class, origin, file) as ``attention_panels.csv``."""
    pixels = read_table(preprocessed, ["image_id", "image"], chosen["image_id"].tolist()).set_index("image_id")
    chosen = chosen[chosen["image_id"].isin(pixels.index)]
    if chosen.empty:
        return 0
    models = {name: network.load() for name, network in networks.items()}
    titles = [f"{r.image_id} · {r.label} · {r.origin}" for r in chosen.itertuples()]
    panels = write_panels(models, decode_pngs(list(pixels.loc[chosen["image_id"], "image"])),
                          list(chosen["image_id"]), titles, context.run_uri)
    listing = chosen[["image_id", "label", "origin"]].assign(file=[p.uri.rsplit("/", 1)[-1] for p in panels])
    context.write_csv(PANELS, listing)
    return len(panels)


def attention_stage(preprocessed: StageOutput[PreprocessSummary], teacher: StageOutput[TeacherSummary],
                    partition: StageOutput[PartitionSummary], students: Sequence[StageOutput[StudentSummary]],
                    data_path: str, config: PipelineConfig) -> Stage[AttentionSummary]:
    """Attention of the teacher and every student on validation: distances, lesion focus and panels.

    ``data_path`` is where the lesion masks are looked for; it is part of the
    preprocessed key already (the image listing holds every URI).
    """

    def write(context: StageContext) -> AttentionSummary:
        val = splits(partition).query("split == 'val'")
        ids = val["image_id"].tolist()
        networks = {TEACHER: teacher_network(teacher), **{model_name(s): Network(s.folder) for s in students}}
        mask_root = data_path if ids and storage.exists(lesion_mask_uri(data_path, ids[0])) else ""
        scores = score_validation(preprocessed, ids, networks, mask_root, config)
        distance, focus = write_tables(scores, context)
        panels = stage_panels(preprocessed, networks, choose_images(val, config.seed), context)
        return AttentionSummary(images=int(scores["image_id"].nunique()),
                                masked=int(scores.dropna(subset=["lesion_area"])["image_id"].nunique()),
                                panels=panels, distance=table_dict(distance), lesion_focus=table_dict(focus))

    inputs = {"teacher": teacher.key, "students": [s.key for s in students], "partition": partition.key,
              "seed": config.seed, "per_class": PER_CLASS}
    return Stage("attention", inputs, AttentionSummary, write,
                 params={"variants": ",".join(s.summary.variant for s in students), "seed": config.seed})


def table_dict(table: pd.DataFrame) -> dict:
    """{row: {layer: value}} with 6 significant digits (a summary, logged as metrics)."""
    return {str(m): {k: float(f"{v:.6g}") for k, v in row.items() if pd.notna(v)} for m, row in table.iterrows()}


def distance_table(attention: StageOutput[AttentionSummary]) -> pd.DataFrame:
    return attention.read_csv(DISTANCE, index_col=0)


def focus_table(attention: StageOutput[AttentionSummary]) -> pd.DataFrame:
    """Model × layer share of attention inside the lesion (empty where the dataset has no masks)."""
    return attention.read_csv(FOCUS, index_col=0) if attention.has(FOCUS) else pd.DataFrame()


def panel_list(attention: StageOutput[AttentionSummary]) -> pd.DataFrame:
    return attention.read_csv(PANELS) if attention.has(PANELS) else pd.DataFrame(columns=["image_id", "file"])


def format_attention(attention: StageOutput[AttentionSummary]) -> str:
    """The two tables for the terminal."""
    s = attention.summary
    blocks = [f"attention        mean AT distance to the teacher per layer, {s.images} validation images\n"
              f"{distance_table(attention).to_string(float_format=lambda v: f'{v:.2e}')}"]
    focus = focus_table(attention)
    if not focus.empty:
        blocks.append(f"lesion focus     share of attention inside the lesion, {s.masked} images\n"
                      f"{focus.round(3).to_string()}")
    return "\n\n".join(blocks)


# ---------------------------------------------------------------- skin attention


def load_student(uri: str) -> tuple[nn.Module, ModelCard]:
    """A student (folder, s3:// or ``models:/`` URI) returning every layer's feature map, and its card."""
    return load_bundle(resolve_model(uri), layers=LAYERS)


def panel_names(images: Sequence[str]) -> list[str]:
    """A file-safe, unique name per image: its file stem (``-2``, ``-3`` … for repeats)."""
    names, seen = [], {}
    for uri in images:
        stem = re.sub(r"[^\w.-]", "_", uri.rstrip("/").rsplit("/", 1)[-1].rsplit(".", 1)[0]) or "image"
        seen[stem] = seen.get(stem, 0) + 1
        names.append(stem if seen[stem] == 1 else f"{stem}-{seen[stem]}")
    return names


def attention_panels(model: str, teacher: str, images: Sequence[str], out: str,
                     baseline: str | None = None) -> list[Panel]:
    """``skin attention``: per image a panel of the teacher's, the student's (and the baseline's) maps.

    Images are preprocessed with the student's ``PreprocessConfig``
    (``preprocess_with``, as in training); a baseline trained on differently
    preprocessed images is refused, since its maps would be of other pixels.
    """
    student, card = load_student(model)
    models = {TEACHER: teacher_network(load_output(teacher, TeacherSummary, "teacher")).load(),
              LayerSet.parse(card.variant).display_name: student}
    if baseline:
        other, other_card = load_student(baseline)
        if other_card.preprocess != card.preprocess:
            raise ValueError(f"{baseline} was trained on images preprocessed as {other_card.preprocess}, "
                             f"{model} on {card.preprocess}: their maps are not comparable")
        name = LayerSet.parse(other_card.variant).display_name
        models[name if name not in models else f"{name} (--baseline)"] = other
    pixels = np.stack([preprocess_with(storage.read_bytes(uri), card.preprocess, name=uri).image for uri in images])
    return write_panels(models, pixels, panel_names(images), list(images), out)
