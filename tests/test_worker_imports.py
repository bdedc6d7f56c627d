"""What a training worker imports before its first step: on a small node those imports are start-up time of
every fit (issue 12), so the stage and tracking code stays out of the workers' modules."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

# The driver's side of a stage: MLflow, the stage machinery, the teacher's montage
DRIVER_ONLY = {"mlflow", "matplotlib", "raytasks.stages", "raytasks.tracking", "raytasks.student", "raytasks.teacher"}


def imported(module: str) -> set[str]:
    """The modules a fresh interpreter holds after importing ``module``."""
    code = f"import importlib, json, sys; importlib.import_module({module!r}); print(json.dumps(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    return {name.split(".")[0] if not name.startswith("raytasks.") else name for name in json.loads(out)}


@pytest.mark.parametrize("loop", ["raytasks.student_loop", "raytasks.teacher_loop"])
def test_training_loops_import_none_of_the_drivers_side(loop: str) -> None:
    assert not DRIVER_ONLY & imported(loop)


def test_the_worker_entry_needs_nothing_a_ray_train_worker_lacks() -> None:
    """``run_loop`` is what a worker unpickles; the loop's own imports then overlap the shard's reading."""
    assert not {"torchvision", "sklearn", "faiss", "mlflow", "raytasks.student_loop"} & imported("raytasks.worker")


@pytest.mark.parametrize("module", ["raytasks.student_loop", "skin_core.inference"])
def test_a_classifier_trains_and_serves_without_the_teachers_clustering(module: str) -> None:
    assert not {"faiss", "pytorch_metric_learning"} & imported(module)
