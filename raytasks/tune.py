"""Ray Tune search over MS-loss margins, cluster count, transfer layers, β and learning rate.

Each trial runs teacher → partition → one AT student, reusing the stage
folders of the pipeline: trials with the same teacher settings share one
trained teacher (its folder is keyed by the teacher's inputs), and a rerun
reuses every finished stage.  The Train V2 way: the Tune function builds and
fits the ``TorchTrainer``, and ``TuneReportCallback`` forwards each epoch's
validation metrics so ASHA can stop poor trials early.  The driver is the only
MLflow writer: one parent run for the sweep, one nested run per trial
(``MLflowLoggerCallback``; failed trials end as FAILED), then the best student
is registered.  A sweep whose driver died resumes from ``out/tune``.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

import pandas as pd
import ray.tune
from ray.air.integrations.mlflow import MLflowLoggerCallback
from ray.tune import FailureConfig, RunConfig, Tuner
from ray.tune.integration.ray_train import TuneReportCallback
from ray.tune.schedulers import ASHAScheduler

from raytasks.registry import Candidate, register_champion, tracking_at
from raytasks.runtime import init_ray, storage_path
from raytasks.stages import StageOutput
from raytasks.tracking import PARENT_TAG, TrackedRun, tracked_run
from raytasks.workflow import prepare, students, teacher_and_partition
from skin_core import storage
from skin_core.config import PipelineConfig, TuneConfig, config_hash, from_dict, to_dict
from skin_core.layers import all_layer_sets

logger = logging.getLogger(__name__)

STUDENT_FOLDER, STUDENT_KEY = "student_folder", "student_key"  # the trial's published student, in its last result
# Tune needs a non-empty request, but a CPU fraction here would leave Ray Data 0.99 of the 1 CPU it plans
# for, and the stage hangs: the trial (which only drives) asks for memory instead.
TRIAL_RESOURCES = {"cpu": 0, "memory": 256 * 2**20}


def search_space(t: TuneConfig) -> dict:
    """Tune's param_space: a choice per listed parameter, log-uniform lr, grid or choice over layer sets."""
    layers = list(t.layers) or all_layer_sets()
    choice = lambda values: values[0] if len(values) == 1 else ray.tune.choice(list(values))  # noqa: E731
    return {
        "ms_alpha": choice(t.ms_alpha), "ms_beta": choice(t.ms_beta), "ms_base": choice(t.ms_base),
        "miner_epsilon": choice(t.miner_epsilon), "clusters": choice(t.clusters), "at_beta": choice(t.at_beta),
        "variant": ray.tune.grid_search(layers) if t.layers_grid else choice(layers),
        "lr": t.lr[0] if len(t.lr) == 1 else ray.tune.loguniform(*t.lr),
    }


def trial_config(base: PipelineConfig, params: dict) -> PipelineConfig:
    """The pipeline config of one trial: the base with the sampled values in place."""
    d = to_dict(base)
    d["teacher"].update({k: params[k] for k in ("ms_alpha", "ms_beta", "ms_base", "miner_epsilon", "clusters")})
    d["student"].update({"lr": params["lr"], "at_beta": params["at_beta"], "variants": [params["variant"]]})
    return from_dict(PipelineConfig, d)


def trial(params: dict, base: PipelineConfig, preprocessed: StageOutput) -> None:
    """One Tune trial: teacher (or the cached one) → partition → the student, reporting each epoch."""
    config = trial_config(base, params)
    teacher, partition = teacher_and_partition(config, preprocessed, TrackedRun())
    (student,) = students(config, preprocessed, teacher, partition, TrackedRun(), callbacks=(TuneReportCallback(),))
    ray.tune.report({f"val_{config.student.select_metric}": student.summary.best, STUDENT_FOLDER: student.folder,
                     STUDENT_KEY: student.key})


@dataclass(frozen=True)
class SweepResult:
    table: pd.DataFrame  # trial, parameters, metric, status
    best_folder: str
    registered: str
    mlflow_run: str


def build_tuner(config: PipelineConfig, preprocessed: StageOutput, tracker: TrackedRun) -> Tuner:
    """A new Tuner, or the one restored from ``out/tune`` when this sweep already started."""
    metric = f"val_{config.student.select_metric}"
    trainable = ray.tune.with_resources(
        ray.tune.with_parameters(trial, base=config, preprocessed=preprocessed), TRIAL_RESOURCES)
    path = storage.join(storage_path(storage.join(config.out, "tune")), sweep_name(config))
    if Tuner.can_restore(path):
        logger.info("resuming the sweep at %s", path)
        return Tuner.restore(path, trainable=trainable, resume_errored=False, restart_errored=False)
    callbacks = [MLflowLoggerCallback(tracking_uri=tracker.uri, experiment_name=tracker.experiment,
                                      tags={PARENT_TAG: tracker.run_id})] if tracker.enabled else []
    t = config.tune
    return Tuner(trainable, param_space=search_space(t), tune_config=ray.tune.TuneConfig(
        num_samples=t.num_samples, max_concurrent_trials=t.max_concurrent,
        scheduler=ASHAScheduler(metric=metric, mode="max", grace_period=t.grace_period,
                                max_t=config.student.epochs + 1)),
        run_config=RunConfig(name=sweep_name(config), storage_path=storage_path(storage.join(config.out, "tune")),
                             failure_config=FailureConfig(max_failures=0), callbacks=callbacks))


def sweep_name(config: PipelineConfig) -> str:
    return "sweep-" + config_hash({k: v for k, v in to_dict(config).items() if k != "tracking"})[:12]


def summary_table(grid: ray.tune.ResultGrid, metric: str) -> pd.DataFrame:
    """One row per trial: its id, sampled parameters, metric, and status (or the error)."""
    rows = []
    for result in grid:
        rows.append({"trial": result.metrics.get("trial_id", result.path.rsplit("/", 1)[-1]) if result.metrics
                     else result.path.rsplit("/", 1)[-1], **result.config,
                     metric: (result.metrics or {}).get(metric, float("nan")),
                     "status": "ok" if result.error is None else f"failed: {type(result.error).__name__}"})
    return pd.DataFrame(rows).sort_values(metric, ascending=False, na_position="last").reset_index(drop=True)


def _trial_run(tracker: TrackedRun, trial_id: str) -> str:
    """The MLflow run of one trial ("" when tracking is off)."""
    return next((r.info.run_id for r in tracker.children() if r.data.tags.get("trial_name", "").endswith(trial_id)),
                "")


def register_sweep_best(config: PipelineConfig, tracker: TrackedRun, grid: ray.tune.ResultGrid) -> tuple[str, str]:
    """(best student folder, "NAME/VERSION" when registered) from the finished trials."""
    metric = f"val_{config.student.select_metric}"
    best = grid.get_best_result(metric, "max", filter_nan_and_inf=True)
    candidate = Candidate(_trial_run(tracker, best.metrics["trial_id"]), best.metrics[STUDENT_FOLDER],
                          best.metrics[STUDENT_KEY], best.metrics[metric])
    return candidate.folder, register_champion(tracker, config.tracking, [candidate], metric)


def run_tune(config: PipelineConfig) -> SweepResult:
    """Preprocess once, run the sweep, register the best student; the summary table is in the result."""
    with tracked_run(config, "sweep", os.environ) as tracker:
        init_ray()
        prepared = prepare(config, tracker)
        with tracking_at(tracker.uri or None):  # Ray's MLflow callback sets the global URI
            grid = build_tuner(config, prepared.preprocessed, tracker).fit()
        table = summary_table(grid, f"val_{config.student.select_metric}")
        tracker.log_text(table.to_csv(index=False), "sweep_summary.csv")
        folder, registered = register_sweep_best(config, tracker, grid)
        return SweepResult(table, folder, registered, tracker.run_id)
