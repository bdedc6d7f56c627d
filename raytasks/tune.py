"""Ray Tune search over MS-loss margins, cluster count, transfer layers, β and learning rate.

Each trial runs teacher → partition → one AT student, reusing the stage
folders of the pipeline: trials with the same teacher settings share one
trained teacher (its folder is keyed by the teacher config hash), and a rerun
reuses every finished stage.  The Train V2 way: the Tune function builds and
fits the ``TorchTrainer``, and ``TuneReportCallback`` forwards each epoch's
validation metrics so ASHA can stop poor trials early.  The driver is the only
MLflow writer: one parent run for the sweep, one nested run per trial
(``MLflowLoggerCallback``; failed trials end as FAILED), then the best student
is registered.  A sweep whose driver died resumes from ``out/tune``.
"""

from __future__ import annotations

import itertools
import logging
import os
from dataclasses import dataclass

import pandas as pd
import ray.tune
from ray.air.integrations.mlflow import MLflowLoggerCallback
from ray.tune import FailureConfig, RunConfig, Tuner
from ray.tune.integration.ray_train import TuneReportCallback
from ray.tune.schedulers import ASHAScheduler

from raytasks.pipeline import ensure_dataset, stage_dir, teacher_and_partition
from raytasks.preprocess import PreprocessResult, run_preprocess
from raytasks.registry import log_student, promote_if_better, tracking_at
from raytasks.runtime import init_ray, storage_path
from raytasks.student import run_student, student_settings
from raytasks.tracking import PARENT_TAG, Tracker, open_tracker
from skin_core import storage
from skin_core.publish import read_publication
from skin_core.config import LAYERS, PipelineConfig, TuneConfig, config_hash, from_dict, to_dict

logger = logging.getLogger(__name__)

STUDENT_KEY = "student_folder"  # the trial's published student, in its last result
# Tune needs a non-empty request, but a CPU fraction here would leave Ray Data 0.99 of the 1 CPU it plans
# for, and the stage hangs: the trial (which only drives) asks for memory instead.
TRIAL_RESOURCES = {"cpu": 0, "memory": 256 * 2**20}


def all_layer_sets() -> list[str]:
    """The 15 non-empty subsets of layer1..layer4, as variants (``layer2+layer4``)."""
    return ["+".join(c) for n in range(1, len(LAYERS) + 1) for c in itertools.combinations(LAYERS, n)]


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


def trial(params: dict, base: PipelineConfig, preprocessed_uri: str, preprocessed: PreprocessResult) -> None:
    """One Tune trial: teacher (or the cached one) → partition → the student, reporting each epoch."""
    config = trial_config(base, params)
    teacher_uri, _, partition = teacher_and_partition(config, preprocessed_uri, preprocessed)
    variant = params["variant"]
    out = stage_dir(config, "student", partition.publication.config_hash, config.model, student_settings(config),
                    variant, config.seed)
    student = run_student(preprocessed_uri, teacher_uri, partition, out, config, variant,
                          callbacks=(TuneReportCallback(),))
    ray.tune.report({f"val_{config.student.select_metric}": student.publication.counts["best"],
                     STUDENT_KEY: student.folder})


@dataclass(frozen=True)
class SweepResult:
    table: pd.DataFrame  # trial, parameters, metric, status
    best_folder: str
    registered: str
    mlflow_run: str


def build_tuner(config: PipelineConfig, preprocessed_uri: str, preprocessed: PreprocessResult,
                tracker: Tracker | None) -> Tuner:
    """A new Tuner, or the one restored from ``out/tune`` when this sweep already started."""
    metric = f"val_{config.student.select_metric}"
    trainable = ray.tune.with_resources(
        ray.tune.with_parameters(trial, base=config, preprocessed_uri=preprocessed_uri, preprocessed=preprocessed),
        TRIAL_RESOURCES)
    path = storage.join(storage_path(storage.join(config.out, "tune")), sweep_name(config))
    if Tuner.can_restore(path):
        logger.info("resuming the sweep at %s", path)
        return Tuner.restore(path, trainable=trainable, resume_errored=False, restart_errored=False)
    callbacks = [] if tracker is None else [MLflowLoggerCallback(
        tracking_uri=tracker.uri, experiment_name=tracker.experiment, tags={PARENT_TAG: tracker.run_id})]
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


def _trial_run(tracker: Tracker, trial_id: str) -> str:
    runs = tracker.client.search_runs([tracker.experiment_id], f"tags.`{PARENT_TAG}` = '{tracker.run_id}'")
    return next(r.info.run_id for r in runs if r.data.tags.get("trial_name", "").endswith(trial_id))


def register_sweep_best(config: PipelineConfig, tracker: Tracker | None, grid: ray.tune.ResultGrid) -> tuple[str, str]:
    """(best student folder, "NAME/VERSION" when registered) from the finished trials."""
    metric = f"val_{config.student.select_metric}"
    best = grid.get_best_result(metric, "max", filter_nan_and_inf=True)
    folder = best.metrics[STUDENT_KEY]
    if tracker is None:
        return folder, ""
    t = config.tracking
    version = log_student(tracker.uri, _trial_run(tracker, best.metrics["trial_id"]), folder, t.registered_model,
                          read_publication(best.metrics[STUDENT_KEY].rsplit("/", 1)[0]).config_hash)
    promote_if_better(tracker.client, t.registered_model, version, t.alias, metric, best.metrics[metric])
    return folder, f"{t.registered_model}/{version}"


def run_tune(config: PipelineConfig) -> SweepResult:
    """Preprocess once, run the sweep, register the best student; the summary table is in the result."""
    tracker = open_tracker(config, "sweep", os.environ)
    data_path = ensure_dataset(config)
    init_ray()
    preprocessed_uri = stage_dir(config, "preprocessed", data_path, config.preprocess)
    preprocessed = run_preprocess(data_path, preprocessed_uri, config.preprocess)
    with tracking_at(tracker.uri if tracker else None):  # Ray's MLflow callback sets the global URI
        grid = build_tuner(config, preprocessed_uri, preprocessed, tracker).fit()
    table = summary_table(grid, f"val_{config.student.select_metric}")
    if tracker is not None:
        tracker.client.log_text(tracker.run_id, table.to_csv(index=False), "sweep_summary.csv")
    folder, registered = register_sweep_best(config, tracker, grid)
    if tracker is not None:
        tracker.finish(tracker.run_id, failed=table["status"].ne("ok").all())
    return SweepResult(table, folder, registered, tracker.run_id if tracker else "")
