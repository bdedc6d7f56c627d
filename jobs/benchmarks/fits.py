"""What the teacher and student benchmarks share: the worker settings they compare, Ray Train's floor,
the synthetic set they train on, and the rows each setting prints.

Two settings, both measured in the same run against one plain single-process loop:

- ``old``: ``resources.num_workers=2, cpus_per_worker=0.5``: DDP over gloo between two workers with one
  torch thread each on a 2-core node (the settings before issue 12);
- ``new``: ``resources.num_workers=0`` (auto, ``raytasks.runtime.plan_workers``): one worker per CPU node
  using every core (one worker per GPU with ``--gpu``).

Each setting's overhead is the stage's wall time less the per-epoch compute its workers record, in three
parts, from the wall-clock ``start_time`` each epoch records: the start-up (the stage's call to its first
epoch: Ray Train's start, reading and decoding the split, building the models), publishing (the last
epoch's end to the stage's return: the last report, the final files, the stage's outputs), and what lies
between the epochs (checkpoints and reports).  The fixed cost is start-up + publishing (issue 12's
definition); the rest grows with the epochs.  A no-op ``TorchTrainer`` fit on the same workers, measured
in the same run, is Ray Train's own floor.

    from benchmarks.fits import SETTINGS, fit_rows, noop_fit_s  # or `from fits import ...` beside it
"""

from __future__ import annotations

import os
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path

import pandas as pd
from ray.train import RunConfig
from ray.train.torch import TorchTrainer

from raytasks.runtime import worker_plan
from skin_core.config import PipelineConfig, ResourcesConfig

if __package__:  # imported as benchmarks.fits by jobs/benchmark.py
    from .table import row
else:  # run beside the benchmark scripts
    from table import row

SETTINGS = {"old": ResourcesConfig(num_workers=2, cpus_per_worker=0.5),
            "new": ResourcesConfig(num_workers=0, cpus_per_worker=1.0)}
GOALS = ("goals (issue 12): Ray loop ≥ 0.90× and whole fit ≥ 0.75× the plain loop; fixed cost (start-up to the "
         "first step + publishing) ≤ 10 s per stage")


def machine_load() -> str:
    """The 1-minute load average over the cores: other work on the machine skews every figure."""
    return f"load {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores"


def with_resources(config: PipelineConfig, setting: str, gpu: bool = False) -> PipelineConfig:
    """``config`` at one of the compared settings."""
    return replace(config, resources=replace(SETTINGS[setting], use_gpu=gpu))


def total_threads(config: PipelineConfig) -> int:
    """Torch threads of all the workers together: what the plain loop gets."""
    plan = worker_plan(config.resources)
    return plan.num_workers * plan.threads


def noop_fit_s(config: PipelineConfig) -> float:
    """Seconds for a ``TorchTrainer`` fit whose workers do nothing, on the workers ``config`` plans."""
    def nothing(_: dict) -> None:  # nested: pickled by value, so the workers need not import this file
        return None

    plan = worker_plan(config.resources)
    with tempfile.TemporaryDirectory() as scratch:
        start = time.perf_counter()
        TorchTrainer(nothing, scaling_config=plan.scaling_config(),
                     run_config=RunConfig(name="noop", storage_path=str(Path(scratch).resolve()))).fit()
        return time.perf_counter() - start


@dataclass(frozen=True)
class FitTimes:
    """One setting's fit: what it trained and where its time went."""

    images: float  # images trained, over all epochs
    loop_s: float  # Σ of the per-epoch seconds the loop ratio compares (train_s; the teacher's whole epoch)
    compute_s: float  # Σ of every per-epoch second the workers record (adds validation)
    wall_s: float  # the stage's wall time: start-up, data, epochs, checkpoints, publishing
    startup_s: float  # the stage's call to its first epoch's start
    publish_s: float  # the last epoch's end to the stage's return
    floor_s: float  # a no-op TorchTrainer fit on the same workers
    workers: int
    threads: int  # torch threads per worker
    best: float  # images/s of the fastest epoch: steady state, and the least disturbed by other load


def overhead_parts(history: pd.DataFrame, compute: list[str], called: float, returned: float) -> dict[str, float]:
    """``startup_s`` and ``publish_s`` of a stage called and returned at these wall-clock times (``time.time()``),
    from its history's ``start_time`` and the ``compute`` seconds of each epoch."""
    last = history.loc[history["start_time"].idxmax()]
    return {"startup_s": float(history["start_time"].min()) - called,
            "publish_s": returned - (float(last["start_time"]) + float(last[compute].sum()))}


@dataclass(frozen=True)
class PlainTimes:
    """The plain loop: its images and seconds (the baselines of the ratios)."""

    images: float
    loop_s: float  # the same per-epoch work as FitTimes.loop_s
    whole_s: float  # reading and decoding the split plus every epoch's work (training and validation)
    threads: int
    best: float  # images/s of the fastest epoch


def fit_rows(name: str, setting: str, t: FitTimes, plain: PlainTimes) -> list[dict]:
    """The loop and whole-fit images/s as ratios to the plain loop's; the fixed cost and Ray Train's floor."""
    label = f"{setting}: {t.workers} worker(s) × {t.threads} thread(s)"
    return [row(name, f"Ray Train loop, {label}", t.images / t.loop_s, "images/s", plain.images / plain.loop_s),
            row(name, f"Ray Train loop, fastest epoch, {label}", t.best, "images/s", plain.best),
            row(name, f"Ray Train whole fit (stage wall {t.wall_s:.1f} s), {label}", t.images / t.wall_s,
                "images/s", plain.images / plain.whole_s),
            row(name, f"fixed cost: start-up to the first step + publishing, {label}", t.startup_s + t.publish_s,
                "s"),
            row(name, f"  start-up: stage call to the first epoch, {label}", t.startup_s, "s"),
            row(name, f"  publishing: last epoch's end to the stage's return, {label}", t.publish_s, "s"),
            row(name, f"between epochs: checkpoints and reports, {label}",
                t.wall_s - t.compute_s - t.startup_s - t.publish_s, "s"),
            row(name, f"all overhead (wall − per-epoch compute), {label}", t.wall_s - t.compute_s, "s"),
            row(name, f"no-op TorchTrainer fit (Ray Train's floor), {label}", t.floor_s, "s")]


def plain_rows(name: str, plain: PlainTimes) -> list[dict]:
    """The baselines' own rows (ratio 1.00)."""
    loop, whole = plain.images / plain.loop_s, plain.images / plain.whole_s
    return [row(name, f"plain loop, 1 process × {plain.threads} threads (baseline of the loop ratios)", loop,
                "images/s", loop),
            row(name, "plain loop, fastest epoch (baseline of the fastest-epoch ratios)", plain.best, "images/s",
                plain.best),
            row(name, f"plain whole run ({plain.whole_s:.1f} s: read + decode + epochs; baseline of the fits)",
                whole, "images/s", whole)]
