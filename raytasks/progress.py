"""Live progress of a training stage: one line per epoch, and the epoch's metrics in MLflow as it ends.

``EpochProgress`` is a Ray Train ``UserCallback``: it runs in the Train
controller, which Ray pins to the driver's node, so MLflow is written from the
driver's side only (never from the workers), while the run is still going: the
MLflow UI draws live curves.  Rank 0's metrics are the epoch's (its validation
figures are gathered over every rank).
"""

from __future__ import annotations

import logging
import math
import time
from typing import Any, Mapping

import ray.train

from raytasks.tracking import TrackedRun

logger = logging.getLogger(__name__)

# Shown in the progress line when present, in this order; every numeric metric goes to MLflow.
HEADLINE = ("loss", "ce", "at", "val_balanced_accuracy", "val_accuracy", "val_macro_f1", "knn_balanced_accuracy",
            "nmi_prev")


# The parts of an epoch its worker times (teacher: features, k-means, training; student: training, validation)
EPOCH_PARTS = ("extract_s", "kmeans_s", "train_s", "val_s")


def progress_line(stage: str, metrics: Mapping[str, Any], total: int, started: float, first_epoch: int) -> str:
    """``teacher  epoch 3/10  loss 0.412  …  42.0 img/s  ETA 4m05s``.

    ``started`` is when this attempt's first epoch was reported: from the second report on, the time per epoch is
    the wall time between reports (checkpointing included); at the first, it is the epoch's own timed parts.
    """
    epoch = int(metrics["epoch"])
    done = epoch - first_epoch + 1
    left = max(0, total - epoch - 1)
    if done > 1:
        per_epoch = (time.monotonic() - started) / (done - 1)
    else:
        per_epoch = sum(float(metrics.get(part, 0.0)) for part in EPOCH_PARTS)
    figures = "  ".join(f"{k} {metrics[k]:.4g}" for k in HEADLINE
                        if isinstance(metrics.get(k), (int, float)) and math.isfinite(metrics[k]))
    speed = f"  {metrics['images_per_s']:.1f} img/s" if "images_per_s" in metrics else ""
    return f"{stage:<18} epoch {epoch + 1}/{total}  {figures}{speed}  ETA {_duration(per_epoch * left)}"


def _log_to_console() -> None:
    """The controller is a Ray actor whose root logger shows only warnings: give this module's lines a
    handler there (Ray forwards the actor's stderr to the driver's console)."""
    if not logger.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        logger.propagate = False


def _duration(seconds: float) -> str:
    minutes, secs = divmod(int(round(seconds)), 60)
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


class EpochProgress(ray.train.UserCallback):
    """Logs each reported epoch (one line) and sends its numeric metrics to the stage's MLflow run.

    One fit may train several stages in turn (the student variants): ``runs`` maps
    each one's ``part`` (the value of the metrics' ``part_key``) to its stage name
    and MLflow run; a fit of one stage uses the part "".
    """

    def __init__(self, total_epochs: int, runs: Mapping[str, tuple[str, TrackedRun]], part_key: str = "") -> None:
        self.total, self.part_key, self.runs = total_epochs, part_key, dict(runs)
        self._started: dict[str, tuple[float, int]] = {}

    def after_report(self, run_context, metrics: list[dict[str, Any]], checkpoint) -> None:  # noqa: ANN001
        rank0 = metrics[0]
        part = str(rank0.get(self.part_key, "")) if self.part_key else ""
        stage, run = self.runs[part]
        if part not in self._started:  # the first report of this part in this attempt (a resumed one starts later)
            self._started[part] = (time.monotonic(), int(rank0["epoch"]))
            _log_to_console()
        started, first = self._started[part]
        logger.info(progress_line(stage, rank0, self.total, started, first))
        run.log_metrics(rank0, step=int(rank0["epoch"]))
