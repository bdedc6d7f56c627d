"""The whole pipeline, stage by stage; ``jobs/pipeline.py`` and ``skin pipeline`` call ``run_pipeline``.

Every stage publishes into its own folder named by the hash of the config it
depends on, and is skipped when that folder already holds a completed result:
a rerun only does what changed.
"""

from __future__ import annotations

import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from raytasks.evaluation import EvaluationResult, format_tables, run_evaluation
from raytasks.partition import PartitionResult, format_partition, run_partition
from raytasks.preprocess import PreprocessResult, format_result, run_preprocess
from raytasks.runtime import init_ray
from raytasks.student import StudentResult, run_student
from raytasks.teacher import ASSIGNMENTS, TeacherResult, format_teacher, run_teacher
from skin_core import storage
from skin_core.clustering.factors import factor_nmi
from skin_core.config import PipelineConfig, config_hash
from skin_core.data.isic import GROUND_TRUTH, load_isic
from skin_core.data.summary import DatasetSummary, format_summary, summarize

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


def run_students(config: PipelineConfig, preprocessed_uri: str, teacher_uri: str,
                 partition: PartitionResult) -> tuple[StudentResult, ...]:
    """The baseline and every AT variant, each in its own stage folder (a new variant reuses the rest)."""
    students = []
    for variant in config.student.variants:
        out = stage_dir(config, "student", partition.publication.config_hash, config.model, config.student,
                        variant, config.seed)
        logger.info("student %s -> %s", variant, out)
        students.append(run_student(preprocessed_uri, teacher_uri, partition, out, config, variant))
    return tuple(students)


def run_pipeline(config: PipelineConfig) -> PipelineResult:
    data_path = ensure_dataset(config)
    summary = summarize(load_isic(data_path))
    logger.info("dataset:\n%s", format_summary(summary))
    init_ray()
    preprocessed_uri = stage_dir(config, "preprocessed", data_path, config.preprocess)
    preprocessed = run_preprocess(data_path, preprocessed_uri, config.preprocess)
    teacher_uri = stage_dir(config, "teacher", preprocessed.publication.config_hash, config.model,
                            config.teacher, config.seed)
    teacher = run_teacher(preprocessed_uri, teacher_uri, config)
    partition = run_partition(teacher_uri, stage_dir(config, "partition", teacher_uri, config.partition),
                              config.partition)
    students = run_students(config, preprocessed_uri, teacher_uri, partition)
    evaluation = run_evaluation(preprocessed_uri, partition, list(students),
                                stage_dir(config, "evaluation", *[s.publication.config_hash for s in students]),
                                config.resources)
    scores = _factor_scores(data_path, teacher)
    report = "\n\n".join([format_summary(summary), format_result(preprocessed), format_teacher(teacher, scores),
                          format_partition(partition), format_tables(evaluation)])
    return PipelineResult(data_path, summary, preprocessed, teacher, partition, students, evaluation, scores,
                          report)
