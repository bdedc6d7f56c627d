"""The whole pipeline, stage by stage; ``jobs/pipeline.py`` and ``skin pipeline`` call ``run_pipeline``.

Every stage publishes into its own folder named by the hash of the config it
depends on, and is skipped when that folder already holds a completed result:
a rerun only does what changed.
"""

from __future__ import annotations

import logging
import os
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from raytasks.evaluation import EvaluationResult, display_name, format_tables, run_evaluation
from raytasks.partition import PartitionResult, format_partition, run_partition
from raytasks.preprocess import PreprocessResult, format_result, run_preprocess
from raytasks.registry import log_student, promote_if_better
from raytasks.report import write_report
from raytasks.runtime import init_ray
from raytasks.student import HISTORY, StudentResult, run_student, student_settings
from raytasks.teacher import ASSIGNMENTS
from raytasks.teacher import HISTORY as TEACHER_HISTORY
from raytasks.teacher import TeacherResult, format_teacher, run_teacher
from raytasks.tracking import Tracker, log_stage, open_tracker
from skin_core import storage
from skin_core.clustering.factors import factor_nmi
from skin_core.config import PipelineConfig, config_hash, flatten, to_dict
from skin_core.data.isic import GROUND_TRUTH, load_isic
from skin_core.data.summary import DatasetSummary, format_summary, summarize
from skin_core.models.bundle import WEIGHTS_FILE

logger = logging.getLogger(__name__)

FACTORS_FILE = "synth_factors.csv"  # written by the synthetic generator beside its tables


@dataclass(frozen=True)
class PipelineResult:
    data_path: str
    dataset: DatasetSummary
    preprocessed: PreprocessResult
    teacher: TeacherResult
    partition: PartitionResult
    students: tuple[StudentResult, ...]
    evaluation: EvaluationResult
    factor_nmi: dict[str, float]
    report: str
    mlflow_run: str = ""  # the parent run id, where tracking is on
    registered: str = ""  # "NAME/VERSION" of the best student, where tracking is on


def ensure_dataset(config: PipelineConfig) -> str:
    """The dataset to run on: ``data.path``, or the synthetic set, generated once under ``out``."""
    if config.data.path:
        return config.data.path
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


def stage_dir(config: PipelineConfig, stage: str, *sections: Any) -> str:
    """``out/<stage>/<hash of the sections it depends on>``: changing a setting never collides."""
    return storage.join(config.out, stage, config_hash({"sections": [config_hash(s) for s in sections]})[:12])


def _factor_scores(data_path: str, teacher: TeacherResult) -> dict[str, float]:
    """Cluster NMI against the generator's factors, where the data is synthetic."""
    factors_uri = storage.join(data_path, FACTORS_FILE)
    if not storage.exists(factors_uri):
        return {}
    return factor_nmi(storage.read_csv(teacher.uri(ASSIGNMENTS)), storage.read_csv(factors_uri))


def run_students(config: PipelineConfig, preprocessed_uri: str, teacher_uri: str, partition: PartitionResult,
                 tracker: Tracker | None = None) -> tuple[tuple[StudentResult, ...], dict[str, str]]:
    """The baseline and every AT variant, each in its own stage folder; (results, MLflow run id per variant)."""
    students, runs = [], {}
    for variant in config.student.variants:
        out = stage_dir(config, "student", partition.publication.config_hash, config.model,
                        student_settings(config), variant, config.seed)
        logger.info("student %s -> %s", variant, out)
        student = run_student(preprocessed_uri, teacher_uri, partition, out, config, variant)
        params = {**_params(config, "model", "student"), "student.variant": variant}
        runs[variant] = log_stage(tracker, f"student:{variant}", params, student.publication, student.reused,
                                  history=HISTORY, exclude=(WEIGHTS_FILE,))
        students.append(student)
    return tuple(students), runs


def _params(config: PipelineConfig, *sections: str) -> dict[str, object]:
    return flatten({name: to_dict(getattr(config, name)) for name in sections})


def register_best(config: PipelineConfig, tracker: Tracker | None, evaluation: EvaluationResult,
                  students: tuple[StudentResult, ...], runs: dict[str, str]) -> str:
    """Register the student with the best validation metric; move the alias when it beats the champion."""
    if tracker is None:
        return ""
    metric = config.student.select_metric
    scores = {s.variant: evaluation.metrics()["val"][display_name(s.variant)][metric] for s in students}
    best = max(students, key=lambda s: scores[s.variant])
    t = config.tracking
    version = log_student(tracker.uri, runs[best.variant], best.folder, t.registered_model,
                          best.publication.config_hash)
    promote_if_better(tracker.client, t.registered_model, version, t.alias, f"val_{metric}", scores[best.variant])
    return f"{t.registered_model}/{version}"


def run_pipeline(config: PipelineConfig) -> PipelineResult:
    """Every stage in order, tracked under one parent MLflow run (closed as failed if a stage raises)."""
    tracker = open_tracker(config, "pipeline", os.environ)
    try:
        result = _run_stages(config, tracker)
    except BaseException:
        if tracker is not None:
            tracker.finish(tracker.run_id, failed=True)
        raise
    if tracker is not None:
        tracker.finish(tracker.run_id)
    return result


def _run_stages(config: PipelineConfig, tracker: Tracker | None) -> PipelineResult:
    data_path = ensure_dataset(config)
    summary = summarize(load_isic(data_path))
    logger.info("dataset:\n%s", format_summary(summary))
    init_ray()
    preprocessed_uri = stage_dir(config, "preprocessed", data_path, config.preprocess)
    preprocessed = run_preprocess(data_path, preprocessed_uri, config.preprocess)
    log_stage(tracker, "preprocess", _params(config, "data", "preprocess"), preprocessed.publication,
              preprocessed.reused, exclude=(".parquet",))  # the shards stay in storage; the run links them
    teacher_uri, teacher, partition = teacher_and_partition(config, preprocessed_uri, preprocessed, tracker)
    students, runs = run_students(config, preprocessed_uri, teacher_uri, partition, tracker)
    evaluation = run_evaluation(preprocessed_uri, partition, list(students),
                                stage_dir(config, "evaluation", *[s.publication.config_hash for s in students]),
                                config.resources)
    log_stage(tracker, "evaluation", {"variants": ",".join(config.student.variants)}, evaluation.publication,
              evaluation.reused)
    registered = register_best(config, tracker, evaluation, students, runs)
    scores = _factor_scores(data_path, teacher)
    if tracker is not None:
        tracker.log_metrics(tracker.run_id, {f"cluster_nmi_{k}": v for k, v in scores.items()})
    result = PipelineResult(data_path, summary, preprocessed, teacher, partition, students, evaluation, scores, "",
                            tracker.run_id if tracker else "", registered)
    return replace(result, report=_report(config, result, tracker))


def _report(config: PipelineConfig, r: PipelineResult, tracker: Tracker | None) -> str:
    """The terminal report; the HTML report is written (and logged to the parent run) on the way."""
    stages = format_stages({"preprocess": r.preprocessed, "teacher": r.teacher, "partition": r.partition,
                            **{f"student:{s.variant}": s for s in r.students}, "evaluation": r.evaluation},
                           r.registered)
    hint = mlflow_hint(tracker)
    report_uri = write_report(config.out, config.profile, r.dataset, r.teacher, r.factor_nmi, r.partition,
                              r.evaluation, stages, hint)
    if tracker is not None:
        tracker.log_files(tracker.run_id, [report_uri])
    return "\n\n".join([format_summary(r.dataset), format_result(r.preprocessed),
                        format_teacher(r.teacher, r.factor_nmi), format_partition(r.partition),
                        format_tables(r.evaluation), stages, f"report           {report_uri}\nMLflow           {hint}"])


def mlflow_hint(tracker: Tracker | None) -> str:
    if tracker is None:
        return "tracking off (tracking.enabled=false)"
    if tracker.uri.startswith(("http://", "https://")):
        return f"open {tracker.uri} (run {tracker.run_id})"
    return f"mlflow ui --backend-store-uri {tracker.uri}   (run {tracker.run_id})"


def format_stages(stages: dict, registered: str) -> str:
    """One line per stage: whether it ran or was reused, and where its output is."""
    lines = [f"{name:<20} {'reused' if stage.reused else 'ran':<7} {stage.publication.folder}"
             for name, stage in stages.items()]
    return "stages\n" + "\n".join(lines) + (f"\nregistered {registered}" if registered else "")


def teacher_and_partition(config: PipelineConfig, preprocessed_uri: str, preprocessed: PreprocessResult,
                          tracker: Tracker | None = None) -> tuple[str, TeacherResult, PartitionResult]:
    """The teacher (shared by every config with the same teacher settings) and its cluster partition."""
    teacher_uri = stage_dir(config, "teacher", preprocessed.publication.config_hash, config.model,
                            config.teacher, config.seed)
    teacher = run_teacher(preprocessed_uri, teacher_uri, config)
    log_stage(tracker, "teacher", _params(config, "model", "teacher"), teacher.publication, teacher.reused,
              history=TEACHER_HISTORY)
    partition = run_partition(teacher_uri, stage_dir(config, "partition", teacher_uri, config.partition),
                              config.partition)
    log_stage(tracker, "partition", _params(config, "partition"), partition.publication, partition.reused)
    return teacher_uri, teacher, partition
