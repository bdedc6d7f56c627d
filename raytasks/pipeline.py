"""The whole pipeline, stage by stage; ``jobs/pipeline.py`` and ``skin pipeline`` call ``run_pipeline``.

Every stage publishes into its own folder named by the hash of its inputs, and
is skipped when that folder already holds a completed result: a rerun only does
what changed.  One parent MLflow run holds a nested run per stage; it ends
FAILED if any stage raises.
"""

from __future__ import annotations

import logging
import os
import shlex
from dataclasses import dataclass, replace

from raytasks.attention import AttentionSummary, format_attention
from raytasks.evaluation import EvaluationSummary, format_tables
from raytasks.partition import PartitionSummary, format_partition
from raytasks.preprocess import PreprocessSummary, format_result
from raytasks.report import write_report
from raytasks.runtime import init_ray
from raytasks.stages import StageOutput
from raytasks.student import StudentSummary
from raytasks.teacher import ASSIGNMENTS, TeacherSummary, format_teacher
from raytasks.tracking import TrackedRun, program_path, tracked_run
from raytasks.workflow import attention, evaluate, prepare, register_best, students, teacher_and_partition
from skin_core import storage
from skin_core.clustering.factors import factor_nmi
from skin_core.config import PipelineConfig
from skin_core.data.summary import DatasetSummary, format_summary

logger = logging.getLogger(__name__)

FACTORS_FILE = "synth_factors.csv"  # written by the synthetic generator beside its tables


@dataclass(frozen=True)
class PipelineResult:
    data_path: str
    dataset: DatasetSummary
    preprocessed: StageOutput[PreprocessSummary]
    teacher: StageOutput[TeacherSummary]
    partition: StageOutput[PartitionSummary]
    students: tuple[StageOutput[StudentSummary], ...]
    evaluation: StageOutput[EvaluationSummary]
    attention: StageOutput[AttentionSummary]
    factor_nmi: dict[str, float]
    report: str = ""
    mlflow_run: str = ""  # the parent run id, where tracking is on
    registered: str = ""  # "NAME/VERSION" of the best student, where tracking is on
    example_image: str = ""  # one image of the dataset, for the printed predict command

    @property
    def stages(self) -> list[StageOutput]:
        return [self.preprocessed, self.teacher, self.partition, *self.students, self.evaluation, self.attention]


def _factor_scores(data_path: str, teacher: StageOutput[TeacherSummary]) -> dict[str, float]:
    """Cluster NMI against the generator's factors, where the data is synthetic."""
    factors_uri = storage.join(data_path, FACTORS_FILE)
    if not storage.exists(factors_uri):
        return {}
    return factor_nmi(teacher.read_csv(ASSIGNMENTS), storage.read_csv(factors_uri))


def run_pipeline(config: PipelineConfig) -> PipelineResult:
    """Every stage in order, tracked under one parent MLflow run (closed as FAILED if a stage raises)."""
    with tracked_run(config, "pipeline", os.environ) as tracker:
        return run_stages(config, tracker)


def run_stages(config: PipelineConfig, tracker: TrackedRun) -> PipelineResult:
    """Preprocess → teacher → partition → one student per variant → evaluation → attention → registry → report."""
    init_ray()
    prepared = prepare(config, tracker)
    teacher, partition = teacher_and_partition(config, prepared.preprocessed, tracker)
    trained = tuple(students(config, prepared.preprocessed, teacher, partition, tracker))
    evaluation = evaluate(config, prepared.preprocessed, partition, list(trained), tracker)
    looked = attention(config, prepared, teacher, partition, list(trained), tracker)
    registered = register_best(config, tracker, evaluation, list(trained))
    scores = _factor_scores(prepared.data_path, teacher)
    tracker.log_metrics({f"cluster_nmi_{k}": v for k, v in scores.items()})
    result = PipelineResult(prepared.data_path, prepared.dataset, prepared.preprocessed, teacher, partition, trained,
                            evaluation, looked, scores, mlflow_run=tracker.run_id, registered=registered,
                            example_image=prepared.example_image)
    return replace(result, report=_report(config, result, tracker))


def _report(config: PipelineConfig, r: PipelineResult, tracker: TrackedRun) -> str:
    """The terminal report; the HTML report is written (and logged to the parent run) on the way."""
    report_uri = write_report(config, r, tracker.hint())
    tracker.log_files([report_uri])
    return "\n\n".join([format_summary(r.dataset), format_result(r.preprocessed),
                        format_teacher(r.teacher, r.factor_nmi), format_partition(r.partition),
                        format_tables(r.evaluation), format_attention(r.attention), format_stages(r.stages, r.registered),
                        f"report           {report_uri}", next_steps(config, r, tracker)])


def format_stages(stages: list[StageOutput], registered: str) -> str:
    """One line per stage: whether it ran or was reused, and where its output is."""
    lines = [f"{s.name:<20} {'reused' if s.reused else 'ran':<7} {s.folder}" for s in stages]
    return "stages\n" + "\n".join(lines) + (f"\nregistered {registered}" if registered else "")


def next_steps(config: PipelineConfig, r: PipelineResult, tracker: TrackedRun) -> str:
    """Commands that work when pasted: open MLflow, and predict with the champion."""
    lines = ["next steps (paste into a shell)", tracker.hint()]
    if r.registered:
        t = config.tracking
        lines.append(f"{shlex.quote(program_path('skin'))} predict --model models:/{t.registered_model}@{t.alias} "
                     f"{shlex.quote(r.example_image)}")
    return "\n".join(lines)
