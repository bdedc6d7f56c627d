"""``skin experiment``: the pipeline once per seed, then one comparison of AT against the baseline.

Each seed moves the teacher, the partition and the students' initialisation
together (``experiment.fixed_partition`` keeps the first seed's teacher and
partition, so only the students' seed moves).  Every stage goes through the
stage runner, so seeds share what they can (the preprocessed data) and a
rerun reuses every finished stage.  The comparison stage publishes
``comparison.md``, ``comparison.json``, ``seeds.csv`` and ``comparison.png``:
mean ± std over seeds per variant, the AT − baseline differences with a paired
bootstrap CI over test images pooled across seeds, the teachers' k-NN figures,
the kept epochs, and (with ``experiment.external_data``) the cross-acquisition
figures of every kept model on another clinic's images.  One MLflow parent
run holds a nested run per seed (with its stages) and the comparison.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shlex
import sys
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path

import pandas as pd

from raytasks.evaluation import EvaluationSummary, by_origin, metrics, predictions
from raytasks.preprocess import preprocess_stage
from raytasks.progress import EPOCH_PARTS
from raytasks.runtime import init_ray
from raytasks.stages import Stage, StageContext, StageOutput
from raytasks.student import HISTORY, StudentSummary
from raytasks.teacher import TeacherSummary
from raytasks.tracking import TrackedRun, tracked_run
from raytasks.workflow import evaluate, prepare, run_in_root, students, teacher_and_partition
from skin_core.classes import CLASSES
from skin_core.config import AugmentConfig, PipelineConfig
from skin_core.data.isic import load_isic
from skin_core.layers import LayerSet
from skin_core.reporting.experiment import (SeedResult, comparison_figure, comparison_markdown, mean_std,
                                            paired_differences, seed_table, verdict)

logger = logging.getLogger(__name__)

MARKDOWN, JSON, SEEDS_CSV, FIGURE, EXTERNAL_CSV = ("comparison.md", "comparison.json", "seeds.csv",
                                                   "comparison.png", "cross_acquisition.csv")


@dataclass(frozen=True)
class SeedOutputs:
    """One seed's stages."""

    seed: int
    teacher: StageOutput[TeacherSummary]
    students: list[StageOutput[StudentSummary]]
    evaluation: StageOutput[EvaluationSummary]

    @property
    def stages(self) -> list[StageOutput]:
        return [self.teacher, *self.students, self.evaluation]


@dataclass(frozen=True)
class ExperimentSummary:
    seeds: tuple[int, ...]
    variants: tuple[str, ...]
    differences: list  # AT − baseline rows (variant, set, metric, difference, low, high, ...)


@dataclass(frozen=True)
class ExperimentResult:
    comparison: StageOutput[ExperimentSummary]
    seeds: list[SeedOutputs]
    markdown: str
    wall_s: float
    mlflow_run: str


def seed_configs(config: PipelineConfig, seed: int) -> tuple[PipelineConfig, PipelineConfig]:
    """(config of the teacher and partition, config of the students) for one seed."""
    e = config.experiment
    anchor = e.seeds[0] if e.fixed_partition else seed
    teacher = replace(config, seed=anchor, partition=replace(config.partition, seed=anchor))
    return teacher, replace(teacher, seed=seed)


def run_seed(config: PipelineConfig, seed: int, preprocessed: StageOutput, tracker: TrackedRun) -> SeedOutputs:
    """Teacher → partition → every variant → evaluation, for one seed (reusing whatever is done)."""
    teacher_config, student_config = seed_configs(config, seed)
    with tracker.nested(f"seed {seed}", {"seed": str(seed)}) as run:
        teacher, partition = teacher_and_partition(teacher_config, preprocessed, run)
        trained = students(student_config, preprocessed, teacher, partition, run)
        evaluation = evaluate(student_config, preprocessed, partition, trained, run)
    return SeedOutputs(seed, teacher, trained, evaluation)


def seed_result(outputs: SeedOutputs) -> SeedResult:
    t = outputs.teacher.summary
    return SeedResult(
        seed=outputs.seed, metrics=metrics(outputs.evaluation), metrics_last=metrics(outputs.evaluation, last=True),
        predictions=predictions(outputs.evaluation),
        teacher={k: getattr(t, k) for k in ("knn_accuracy", "knn_balanced_accuracy", "knn_init_accuracy",
                                           "knn_init_balanced_accuracy")},
        kept_epochs={s.summary.variant: (s.summary.best_epoch, s.summary.epochs) for s in outputs.students})


def cross_acquisition(config: PipelineConfig, seeds: list[SeedOutputs], tracker: TrackedRun) -> pd.DataFrame:
    """Every kept model on ``experiment.external_data``, by origin: balanced accuracy and NV recall."""
    data = config.experiment.external_data
    external = run_in_root(preprocess_stage(load_isic(data), config.preprocess), config, tracker)
    models = {f"{o.seed}/{s.summary.variant}": s.folder for o in seeds for s in o.students}
    reports = by_origin(external, models, config.resources)
    rows = [{"seed": int(name.split("/")[0]), "model": LayerSet.parse(name.split("/")[1]).display_name,
             "images": group, "n": r.n, "balanced_accuracy": r.balanced_accuracy, "accuracy": r.accuracy,
             "NV recall": r.recall["NV"], "MEL recall": r.recall["MEL"]}
            for group, by_model in reports.items() for name, r in by_model.items()]
    return pd.DataFrame(rows)


def cross_acquisition_markdown(frame: pd.DataFrame) -> str:
    grouped = frame.groupby(["images", "model"], sort=False)[["balanced_accuracy", "NV recall", "MEL recall",
                                                             "accuracy"]]
    mean, std = grouped.mean(), grouped.std(ddof=1)
    lines = ["| images | model | n | balanced acc. | NV recall | MEL recall | accuracy |", "|---|---|---|---|---|---|---|"]
    n = frame.groupby(["images", "model"], sort=False)["n"].first()
    for (images, model), row in mean.iterrows():
        s = std.loc[(images, model)]
        cells = [f"{row[c]:.3f}" + ("" if pd.isna(s[c]) else f" ± {s[c]:.3f}") for c in mean.columns]
        lines.append(f"| {images} | {model} | {n[(images, model)]} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def comparison_stage(config: PipelineConfig, seeds: list[SeedOutputs], tracker: TrackedRun
                     ) -> Stage[ExperimentSummary]:
    e = config.experiment

    def write(context: StageContext) -> ExperimentSummary:
        results = [seed_result(o) for o in seeds]
        table = seed_table(results)
        summary, diffs = mean_std(table), paired_differences(results, n_boot=e.n_boot)
        text = comparison_markdown(results, summary, diffs)
        if e.external_data:
            external = cross_acquisition(config, seeds, tracker)
            context.write_csv(EXTERNAL_CSV, external)
            text += ("\n### Cross-acquisition: the kept models on " + e.external_data + "\n\n"
                     + cross_acquisition_markdown(external) + "\n")
        context.write_bytes(MARKDOWN, text.encode())
        context.write_csv(SEEDS_CSV, table)
        context.write_bytes(JSON, json.dumps({"summary": summary.to_dict("records"),
                                              "differences": diffs.to_dict("records")}, indent=2,
                                             default=float).encode())
        with tempfile.TemporaryDirectory() as scratch:
            context.write_bytes(FIGURE, comparison_figure(table, diffs, Path(scratch) / FIGURE).read_bytes())
        return ExperimentSummary(tuple(o.seed for o in seeds), tuple(s.summary.variant for s in seeds[0].students),
                                 json.loads(diffs.to_json(orient="records")))

    inputs = {"evaluations": [o.evaluation.key for o in seeds], "teachers": [o.teacher.key for o in seeds],
              "n_boot": e.n_boot, "external": e.external_data}
    return Stage("experiment", inputs, ExperimentSummary, write, name="comparison",
                 params={"seeds": ",".join(str(o.seed) for o in seeds), "n_boot": e.n_boot})


def run_experiment(config: PipelineConfig) -> ExperimentResult:
    """Every seed, then the comparison; one MLflow parent run (FAILED if anything raises)."""
    start = time.perf_counter()
    with tracked_run(config, "experiment", os.environ) as tracker:
        init_ray()
        prepared = prepare(config, tracker)
        seeds = [run_seed(config, seed, prepared.preprocessed, tracker) for seed in config.experiment.seeds]
        comparison = run_in_root(comparison_stage(config, seeds, tracker), config, tracker)
        tracker.log_files([comparison.file(MARKDOWN), comparison.file(FIGURE)])
    markdown = comparison.read_bytes(MARKDOWN).decode()
    return ExperimentResult(comparison, seeds, markdown, time.perf_counter() - start, tracker.run_id)


def command_line() -> str:
    """The command as the user typed it (for the results document): ``skin ...`` or ``python jobs/....py ...``."""
    program = Path(sys.argv[0])
    head = ["skin"] if program.name in ("__main__.py", "skin") else ["python", str(program)]
    return " ".join(shlex.quote(a) for a in [*head, *sys.argv[1:]])


def stage_counts(result: ExperimentResult) -> tuple[int, int]:
    """(stages that ran, stages reused) over every seed and the comparison."""
    stages = [s for o in result.seeds for s in o.stages] + [result.comparison]
    return sum(not s.reused for s in stages), sum(s.reused for s in stages)


def settings_line(config: PipelineConfig) -> str:
    p, m, s, a = config.preprocess, config.model, config.student, config.augment
    default = dataclasses.asdict(AugmentConfig())
    jitter = {k: v for k, v in dataclasses.asdict(a).items() if v != default[k]}
    return (f"{m.arch} ({m.weights} init), {p.size} px ({p.resize_mode}), colour constancy {p.color_constancy}, "
            f"teacher {config.teacher.epochs} epochs K = {config.teacher.clusters}, students {s.epochs} epochs "
            f"lr {s.lr} batch {s.batch_size}, AT β = {s.at_beta}, class imbalance: {s.imbalance}, epoch kept by "
            f"validation {s.select_metric}, augmentation {jitter or 'flips only'}")


def epoch_minutes(stage: StageOutput) -> float:
    """Minutes the stage's epochs took by its own history: feature extraction, k-means, training and validation
    as its worker timed them (start-up, evaluation and publishing are not in it)."""
    history = stage.read_csv(HISTORY)
    parts = [c for c in EPOCH_PARTS if c in history.columns]
    return float(history[parts].apply(pd.to_numeric, errors="coerce").sum().sum()) / 60


def time_table(seeds: list[SeedOutputs]) -> str:
    """Per seed: the epoch minutes of the teacher and of each student, and their sum."""
    names = [LayerSet.parse(s.summary.variant).display_name for s in seeds[0].students]
    lines = ["| seed | teacher | " + " | ".join(names) + " | total |", "|---" * (len(names) + 3) + "|"]
    for o in seeds:
        minutes = [epoch_minutes(o.teacher), *(epoch_minutes(s) for s in o.students)]
        lines.append(f"| {o.seed} | " + " | ".join(f"{m:.1f}" for m in minutes) + f" | {sum(minutes):.1f} |")
    return "\n".join(lines)


def results_document(config: PipelineConfig, result: ExperimentResult, paper_note: str) -> str:
    """``docs/results.md``: the table, the command, the wall time and what it says about the paper's claim."""
    ran, reused = stage_counts(result)
    classes = ", ".join(CLASSES)
    return "\n\n".join([
        f"# Results: the `{config.profile}` profile over seeds {', '.join(map(str, config.experiment.seeds))}",
        f"Written by `skin experiment` on {time.strftime('%Y-%m-%d')}; nothing in this file was typed in by hand. "
        f"Data: `{config.data.path or 'synthetic'}`; classes {classes}.",
        f"Reproduce:\n\n```bash\n{command_line()}\n```",
        f"Wall time: {result.wall_s / 60:.1f} min ({ran} stages ran, {reused} reused); settings: "
        f"{settings_line(config)}.",
        "Epoch minutes per seed, from each stage's history (a reused stage keeps the figures of the run that made "
        "it, on whatever else that machine ran then; start-up, evaluation and publishing are not counted):\n\n"
        + time_table(result.seeds),
        "## What this says about the paper's claim", paper_note,
        "## The comparison", result.markdown,
        f"MLflow run: `{result.mlflow_run or 'tracking off'}`; outputs: `{result.comparison.folder}`.",
    ]) + "\n"


def write_results(path: str, config: PipelineConfig, result: ExperimentResult) -> None:
    note = paper_paragraph(pd.DataFrame(result.comparison.summary.differences))
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(results_document(config, result, note))
    logger.info("results written to %s", path)


def paper_paragraph(diffs: pd.DataFrame) -> str:
    """The paper reports AT above the baseline by +4.6 points of validation accuracy (0.7253 against 0.6794)
    and +3.1 on HAM-test (0.68 against 0.649); say what this run's intervals show."""
    if diffs.empty:
        return "No attention-transfer variant was compared, so this run says nothing about the paper's claim."
    ham = "HAM-test" if (diffs["set"] == "HAM-test").any() else "test"
    return (f"The paper reports attention transfer above the plain ResNet by +4.6 points of validation accuracy "
            f"(0.7253 against 0.6794) and +3.1 points of HAM-test accuracy (0.68 against 0.649), from one run each. "
            f"Here, paired over the same test images and pooled over seeds: {verdict(diffs, ham, 'accuracy')}. "
            f"On balanced accuracy, which NV (two thirds of HAM) cannot dominate: "
            f"{verdict(diffs, ham, 'balanced_accuracy')}.")
