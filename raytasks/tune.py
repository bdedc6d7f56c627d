"""Ray Tune search over MS-loss margins, cluster count, transfer layers, β and learning rate.

Before anything runs, the search space is checked against the configuration
(``skin_core.search_space``): impossible values are refused in one line, or
dropped with ``tune.drop_invalid``; once the data is preprocessed, K is checked
against its size.  No trial starts that was known to fail.

Each trial runs teacher → partition → one AT student, reusing the stage
folders of the pipeline: trials with the same teacher settings share one
trained teacher (its folder is keyed by the teacher's inputs), and a rerun
reuses every finished stage.

**Comparable trials.**  A trial's teacher decides its cluster partition, so
the partition's validation split differs between trials.  Trials are therefore
ranked on a split that no teacher can move: the partition first reserves a
lesion-grouped hold-out (``tune.rank_fraction`` of the lesions, a hash of the
lesion id salted ``rank``; ``partition.holdout_fraction``), the cluster split
runs on the rest, and the student validates on that hold-out
(``student.val_split=holdout``): it picks the kept epoch, feeds ASHA and ranks
the trial.  No student trains on it.  Every trial's student summary records the
hash of its validation rows (``val_rows``), the same for all trials.  The
hold-out is a selection set: the chosen configuration is then evaluated as the
paper does, on the cluster partition, by the pipeline command the sweep prints
(its config with the baseline beside the chosen AT variant).

**Search.**  Optuna's TPE sampler (``OptunaSearch``, seeded by ``tune.seed``)
proposes each trial from the finished ones, behind a ``ConcurrencyLimiter`` of
``tune.max_concurrent``; ``tune.search=random`` uses Ray's seeded random search
instead.  A grid cannot be given to Optuna, so ``tune.layers_grid=true`` (each
layer set once per sample) always runs on the random search.  ASHA stops poor
trials after ``tune.grace_period`` epochs.  ``tune.start_from_profile`` makes
the profile's own values the first trial, so the table shows whether the
search beat them on the same rows.

**Ends.**  The driver is the only MLflow writer: one parent run for the sweep,
one nested run per trial (``MLflowLoggerCallback``; failed trials end as
FAILED).  The best successful trial's student is registered and failed trials
are listed in the table; when every trial failed, ``SweepFailed`` says so in
one line and the parent run ends FAILED.  A sweep whose driver died resumes
from ``out/tune`` (``Tuner.restore``: finished trials are kept, not rerun) and
reopens its MLflow parent run.
"""

from __future__ import annotations

import logging
import os
import shlex
from dataclasses import dataclass, replace

import pandas as pd
import ray.tune
import yaml
from ray.air.integrations.mlflow import MLflowLoggerCallback
from ray.tune import FailureConfig, RunConfig, Tuner
from ray.tune.integration.ray_train import TuneReportCallback
from ray.tune.schedulers import ASHAScheduler
from ray.tune.search import BasicVariantGenerator, ConcurrencyLimiter
from ray.tune.search.optuna import OptunaSearch

from raytasks.preprocess import read_table
from raytasks.registry import Candidate, register_champion, tracking_at
from raytasks.runtime import init_ray, storage_path
from raytasks.settings import PROFILE_DIRS
from raytasks.stage_locks import start_stage_locks
from raytasks.stages import StageOutput
from raytasks.student import rows_hash
from raytasks.tracking import PARENT_TAG, TrackedRun, tracked_run
from raytasks.workflow import prepare, students, teacher_and_partition
from skin_core import storage
from skin_core.config import (ConfigError, PipelineConfig, TuneConfig, config_hash, flatten, from_dict, load_config,
                              profile_path, to_dict)
from skin_core.layers import BASELINE, all_layer_sets
from skin_core.partitioning.clusters import ranking_holdout
from skin_core.search_space import TEACHER_PARAMS, checked_space, data_facts, profile_point

logger = logging.getLogger(__name__)

STUDENT_FOLDER, STUDENT_KEY = "student_folder", "student_key"  # the trial's published student, in its last result
VAL_ROWS = "val_rows"  # the hash of the rows the trial was ranked on, in its last result
# Tune needs a non-empty request, but a CPU fraction here would leave Ray Data 0.99 of the 1 CPU it plans
# for, and the stage hangs: the trial (which only drives) asks for memory instead.
TRIAL_RESOURCES = {"cpu": 0, "memory": 256 * 2**20}
RUN_ID_SUFFIX = ".mlflow_run"  # a file beside the Tune experiment: the parent run a resumed sweep reopens


class SweepFailed(RuntimeError):
    """Every trial of a sweep failed; the message says how many and where their errors are."""


def metric_name(config: PipelineConfig) -> str:
    return f"val_{config.student.select_metric}"


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


def search_algorithm(config: PipelineConfig) -> ray.tune.search.SearchAlgorithm | ray.tune.search.Searcher:
    """Seeded TPE (Optuna) behind a concurrency limit, or seeded random search (always, for a layer grid);
    with ``tune.start_from_profile`` the first trial is the profile's own point."""
    t = config.tune
    first = [first_point(config)] if t.start_from_profile else None
    fixed = not searched(t)
    if t.search == "random" or t.layers_grid or fixed:
        if t.search == "optuna" and t.layers_grid:
            logger.info("tune.layers_grid=true: Optuna cannot enumerate a grid, so this sweep uses seeded random "
                        "search (each layer set once per sample)")
        elif t.search == "optuna":  # Optuna refuses an empty space ("no search space has been defined")
            logger.info("every tune.* list holds one value: nothing to search, each sample trains that one point")
        return BasicVariantGenerator(points_to_evaluate=first, max_concurrent=t.max_concurrent, random_state=t.seed)
    return ConcurrencyLimiter(OptunaSearch(points_to_evaluate=first, seed=t.seed), max_concurrent=t.max_concurrent)


def searched(tune: TuneConfig) -> list[str]:
    """The parameters the sweep varies (one with a single value is a constant of the space)."""
    return [k for k, v in search_space(tune).items() if not isinstance(v, (int, float, str))]


def first_point(config: PipelineConfig) -> dict:
    """The profile's point, holding only the searched parameters."""
    keep = searched(config.tune)
    return {k: v for k, v in profile_point(config).items() if k in keep}


def chosen_config(base: PipelineConfig, params: dict) -> PipelineConfig:
    """The pipeline config of one sampled point: the base with its values, the baseline beside its AT variant."""
    d = to_dict(base)
    d["teacher"].update({k: params[k] for k in TEACHER_PARAMS})
    d["student"].update({"lr": params["lr"], "at_beta": params["at_beta"], "variants": [BASELINE, params["variant"]]})
    return from_dict(PipelineConfig, d)


def trial_config(base: PipelineConfig, params: dict) -> PipelineConfig:
    """What a trial trains: the point's AT student alone, validated on the ranking hold-out (module docstring)."""
    chosen = chosen_config(base, params)
    return replace(chosen, partition=replace(chosen.partition, holdout_fraction=base.tune.rank_fraction),
                   student=replace(chosen.student, variants=(params["variant"],), val_split="holdout"))


def trial(params: dict, base: PipelineConfig, preprocessed: StageOutput) -> None:
    """One Tune trial: teacher (or the cached one) → partition → the student, reporting each epoch."""
    config = trial_config(base, params)
    teacher, partition = teacher_and_partition(config, preprocessed, TrackedRun())
    (student,) = students(config, preprocessed, teacher, partition, TrackedRun(), callbacks=(TuneReportCallback(),))
    ray.tune.report({metric_name(config): student.summary.best, STUDENT_FOLDER: student.folder,
                     STUDENT_KEY: student.key, VAL_ROWS: student.summary.val_rows})


@dataclass(frozen=True)
class SweepResult:
    table: pd.DataFrame  # trial, parameters, metric, ranking rows, status (or the error)
    best_folder: str
    registered: str
    mlflow_run: str
    note: str  # what ranked the trials, and the command that evaluates the chosen config on the cluster partition


def sweep_path(config: PipelineConfig) -> str:
    """The Tune experiment folder, named by the config: the same command finds (and resumes) the same sweep."""
    name = "sweep-" + config_hash({k: v for k, v in to_dict(config).items() if k != "tracking"})[:12]
    return storage.join(storage_path(storage.join(config.out, "tune")), name)


def build_tuner(config: PipelineConfig, preprocessed: StageOutput, tracker: TrackedRun, path: str) -> Tuner:
    """A new Tuner writing to ``path``, or the one restored from there when this sweep already started."""
    trainable = ray.tune.with_resources(
        ray.tune.with_parameters(trial, base=config, preprocessed=preprocessed), TRIAL_RESOURCES)
    if Tuner.can_restore(path):
        logger.info("resuming the sweep at %s: finished trials are kept, the rest run", path)
        return Tuner.restore(path, trainable=trainable, resume_errored=False, restart_errored=False)
    callbacks = [MLflowLoggerCallback(tracking_uri=tracker.uri, experiment_name=tracker.experiment,
                                      tags={PARENT_TAG: tracker.run_id})] if tracker.enabled else []
    t = config.tune
    root, name = path.rsplit("/", 1)
    return Tuner(trainable, param_space=search_space(t), tune_config=ray.tune.TuneConfig(
        metric=metric_name(config), mode="max", search_alg=search_algorithm(config), num_samples=t.num_samples,
        scheduler=ASHAScheduler(grace_period=t.grace_period, max_t=config.student.epochs + 1)),
        run_config=RunConfig(name=name, storage_path=root, failure_config=FailureConfig(max_failures=0),
                             callbacks=callbacks))


def _status(result: ray.tune.Result) -> str:
    """ok (its student published), stopped (by ASHA, before its last epoch), or failed with the error's last line."""
    if result.error is None:
        return "ok" if STUDENT_FOLDER in (result.metrics or {}) else "stopped"
    error = getattr(result.error, "cause", None) or result.error  # the trial's own error, not Ray's task wrapper
    last = (str(error).strip().splitlines() or [""])[-1][:100]
    return f"failed: {type(error).__name__}: {last}"


def summary_table(grid: ray.tune.ResultGrid, metric: str) -> pd.DataFrame:
    """One row per trial: its id, sampled parameters, metric, ranking rows, and status (or the error)."""
    rows = []
    for result in grid:
        values = result.metrics or {}
        rows.append({"trial": values.get("trial_id", result.path.rsplit("/", 1)[-1]), **result.config,
                     metric: values.get(metric, float("nan")), VAL_ROWS: values.get(VAL_ROWS, ""),
                     "status": _status(result)})
    return pd.DataFrame(rows).sort_values(metric, ascending=False, na_position="last").reset_index(drop=True)


def _trial_run(tracker: TrackedRun, trial_id: str) -> str:
    """The MLflow run of one trial ("" when tracking is off)."""
    return next((r.info.run_id for r in tracker.children() if r.data.tags.get("trial_name", "").endswith(trial_id)),
                "")


def register_sweep_best(config: PipelineConfig, tracker: TrackedRun, grid: ray.tune.ResultGrid
                        ) -> tuple[ray.tune.Result, str]:
    """(the best trial that published its student, "NAME/VERSION" when registered).

    Trials that ASHA stopped early published none, so they cannot be chosen even
    when their last (earlier-epoch) value is the highest."""
    metric = metric_name(config)
    best = max((r for r in grid if _status(r) == "ok"), key=lambda r: r.metrics[metric])
    candidate = Candidate(_trial_run(tracker, best.metrics["trial_id"]), best.metrics[STUDENT_FOLDER],
                          best.metrics[STUDENT_KEY], best.metrics[metric])
    return best, register_champion(tracker, config.tracking, [candidate], metric)


def pipeline_command(chosen: PipelineConfig) -> str:
    """``skin pipeline`` with the ``--set`` overrides that turn the config's profile into ``chosen``."""
    try:
        reference = flatten(to_dict(load_config(profile_path(chosen.profile, PROFILE_DIRS))))
    except ConfigError:  # a profile name that no file in jobs/configs carries: the defaults are the reference
        reference = flatten(to_dict(PipelineConfig()))
    sets = [f"{key}={yaml.safe_dump(value, default_flow_style=True).strip() if isinstance(value, list) else value}"
            for key, value in flatten(to_dict(chosen)).items()
            if not key.startswith("tune.") and reference.get(key) != value]
    return " ".join(["skin pipeline --profile", shlex.quote(chosen.profile), *(f"--set {shlex.quote(s)}" for s in sets)])


def closing_note(config: PipelineConfig, chosen: PipelineConfig, holdout_images: int, rows: str) -> str:
    return (f"trials ranked by {metric_name(config)} on the ranking hold-out: {holdout_images} images of "
            f"{config.tune.rank_fraction:.0%} of the lesions (rows {rows}), the same for every trial, trained on by "
            "none.\nIt selects; the chosen configuration is evaluated on the paper's cluster partition, beside the "
            f"baseline, by:\n  {pipeline_command(chosen)}")


def previous_run(path: str) -> str:
    """The parent MLflow run of an interrupted start of the sweep at ``path`` ("" when there is none)."""
    marker = path + RUN_ID_SUFFIX
    return storage.read_bytes(marker).decode().strip() if Tuner.can_restore(path) and storage.exists(marker) else ""


def run_tune(config: PipelineConfig) -> SweepResult:
    """Check the space, preprocess once, run the sweep, register the best student.

    ConfigError before anything runs when the space holds impossible values;
    SweepFailed (the parent run FAILED) when every trial failed.
    """
    config = checked_space(config)  # before Ray, MLflow or the data: a refused space costs seconds
    path = sweep_path(config)
    with tracked_run(config, "sweep", os.environ, resume=previous_run(path)) as tracker:
        if tracker.enabled:
            storage.write_bytes(path + RUN_ID_SUFFIX, tracker.run_id.encode())
        # A trial that ASHA stops is killed mid-fit; Ray Train frees its workers' placement group only once its
        # cleaner sees the dead controller through the State API, which a local Ray without dashboard lacks
        # (the next trial then waits forever for the CPU): a local start here includes the dashboard.
        init_ray(dashboard=True)
        prepared = prepare(config, tracker)
        rows = read_table(prepared.preprocessed, ["image_id", "lesion_id", "label"])
        config = checked_space(config, data_facts(rows, config.tune.rank_fraction))  # K against the images
        locks = start_stage_locks()  # trials that share a teacher train it once (raytasks.stage_locks)
        try:
            with tracking_at(tracker.uri or None):  # Ray's MLflow callback sets the global URI
                grid = build_tuner(config, prepared.preprocessed, tracker, path).fit()
        finally:
            ray.kill(locks)
        metric = metric_name(config)
        table = summary_table(grid, metric)
        tracker.log_text(table.to_csv(index=False), "sweep_summary.csv")
        if not (table["status"] == "ok").any():
            failed = int(table["status"].str.startswith("failed").sum())
            what = f"all {failed} trials failed" if failed == len(table) else \
                f"no trial finished: {failed} of {len(table)} failed, the others were stopped early"
            raise SweepFailed(f"{what}; each one's error is in {path}/<trial>/error.txt")
        best, registered = register_sweep_best(config, tracker, grid)
        held = rows["image_id"][ranking_holdout(rows, config.tune.rank_fraction)]
        chosen = chosen_config(config, best.config)
        note = closing_note(config, chosen, len(held), rows_hash(held.tolist()))
        tracker.log_text(note, "sweep_note.txt")
        return SweepResult(table, best.metrics[STUDENT_FOLDER], registered, tracker.run_id, note)
