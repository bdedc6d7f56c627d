"""The stage sequence that the pipeline, the sweep and the seed experiment share.

Each function runs one or more stages through ``raytasks.stages.run_stage``
under the caller's MLflow run; stage folders live under ``config.out`` and are
named by their inputs, so every caller finds and reuses what another already
finished.
"""

from __future__ import annotations

import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from raytasks.attention import AttentionSummary, attention_stage
from raytasks.evaluation import EvaluationSummary, evaluation_stage, metrics
from raytasks.partition import PartitionSummary, partition_stage
from raytasks.preprocess import PreprocessSummary, preprocess_stage
from raytasks.registry import Candidate, register_champion
from raytasks.stages import Stage, StageOutput, run_stage
from raytasks.student import StudentSummary, train_students
from raytasks.teacher import TeacherSummary, teacher_stage
from raytasks.tracking import TrackedRun
from skin_core import storage
from skin_core.config import ConfigError, PipelineConfig
from skin_core.data.isic import GROUND_TRUTH, load_isic
from skin_core.data.summary import DatasetSummary, summarize
from skin_core.layers import LayerSet

logger = logging.getLogger(__name__)


def ensure_dataset(config: PipelineConfig) -> str:
    """The dataset to run on: ``data.path``, or the synthetic set, generated once under ``out``."""
    if config.data.path:
        return config.data.path
    if config.data.require_path:
        raise ConfigError(f"profile {config.profile!r} needs real data: pass --data PATH (or --set data.path=...); "
                          "it does not fall back to the synthetic set")
    d = config.data
    path = storage.join(config.out, "data", f"synthetic-n{d.synthetic_n}-s{d.synthetic_size}-seed{d.synthetic_seed}")
    if storage.exists(storage.join(path, GROUND_TRUTH)):  # the generator writes its tables last
        logger.info("reusing the synthetic dataset at %s", path)
        return path
    from skin_core.synth import generate_dataset

    logger.info("generating %d synthetic images at %s", d.synthetic_n, path)
    if not storage.is_s3(path):
        generate_dataset(path, n=d.synthetic_n, size=d.synthetic_size, seed=d.synthetic_seed)
        return path
    with tempfile.TemporaryDirectory() as local:  # the generator writes files; S3 gets a copy
        generate_dataset(local, n=d.synthetic_n, size=d.synthetic_size, seed=d.synthetic_seed)
        storage.upload_tree(Path(local), path, last=(GROUND_TRUTH,))  # its presence means "complete"
    return path


def run_in_root(stage: Stage, config: PipelineConfig, tracker: TrackedRun) -> StageOutput:
    """Run ``stage`` in its folder under ``config.out`` (named by its inputs)."""
    return run_stage(stage, stage.folder_in(config.out), tracker)


@dataclass(frozen=True)
class Prepared:
    """The dataset and its preprocessed shards."""

    data_path: str
    dataset: DatasetSummary
    preprocessed: StageOutput[PreprocessSummary]
    example_image: str  # one image's URI, for printed example commands


def prepare(config: PipelineConfig, tracker: TrackedRun) -> Prepared:
    """The dataset (generated when synthetic), summarised, then preprocessed."""
    data_path = ensure_dataset(config)
    manifest = load_isic(data_path)
    preprocessed = run_in_root(preprocess_stage(manifest, config.preprocess), config, tracker)
    return Prepared(data_path, summarize(manifest), preprocessed, str(manifest.frame["uri"].iloc[0]))


def teacher_and_partition(config: PipelineConfig, preprocessed: StageOutput[PreprocessSummary], tracker: TrackedRun
                          ) -> tuple[StageOutput[TeacherSummary], StageOutput[PartitionSummary]]:
    """The teacher (shared by every config with the same teacher settings) and its cluster partition."""
    teacher = run_in_root(teacher_stage(preprocessed, config), config, tracker)
    partition = run_in_root(partition_stage(teacher, config.partition), config, tracker)
    return teacher, partition


def students(config: PipelineConfig, preprocessed: StageOutput, teacher: StageOutput, partition: StageOutput,
             tracker: TrackedRun, variants: Sequence[str] | None = None, callbacks: tuple = ()
             ) -> list[StageOutput[StudentSummary]]:
    """``student.variants`` (or ``variants``), each a stage; the ones not yet trained share one fit."""
    chosen = config.student.variants if variants is None else variants
    return train_students(preprocessed, teacher, partition, config, chosen, tracker, callbacks)


def evaluate(config: PipelineConfig, preprocessed: StageOutput, partition: StageOutput,
             students: list[StageOutput[StudentSummary]], tracker: TrackedRun) -> StageOutput[EvaluationSummary]:
    return run_in_root(evaluation_stage(preprocessed, partition, students, config.resources), config, tracker)


def attention(config: PipelineConfig, prepared: Prepared, teacher: StageOutput, partition: StageOutput,
              students: list[StageOutput[StudentSummary]], tracker: TrackedRun) -> StageOutput[AttentionSummary]:
    """Where the teacher and the students look on validation: distances, lesion focus, panels."""
    stage = attention_stage(prepared.preprocessed, teacher, partition, students, prepared.data_path, config)
    return run_in_root(stage, config, tracker)


def register_best(config: PipelineConfig, tracker: TrackedRun, evaluation: StageOutput[EvaluationSummary],
                  students: list[StageOutput[StudentSummary]]) -> str:
    """Register the student with the best validation metric; the alias moves when it beats the champion."""
    metric = config.student.select_metric
    val = metrics(evaluation)["val"]
    candidates = [Candidate(s.run_id, s.folder, s.key, val[LayerSet.parse(s.summary.variant).display_name][metric])
                  for s in students]
    return register_champion(tracker, config.tracking, candidates, f"val_{metric}")
