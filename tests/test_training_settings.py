"""The worker plan changes speed, not results; the GPU check's dry run.

The student trains at the new settings (``resources.num_workers=0``: one worker using every core) and at
the old ones (2 workers × 0.5 CPU, DDP over gloo) on the same synthetic data with the same seed, and at the
new settings with a second seed.  All three share one preprocessing, teacher and partition.
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from raytasks import workflow
from raytasks.student import HISTORY, train_students
from raytasks.tracking import TrackedRun
from skin_core.config import PipelineConfig, ResourcesConfig, from_dict

REPO = Path(__file__).resolve().parents[1]
OLD = ResourcesConfig(num_workers=2, cpus_per_worker=0.5)  # before issue 12: DDP between 1-thread workers
NEW = ResourcesConfig(num_workers=0, cpus_per_worker=1.0)  # auto: one worker per CPU node, every core
EPOCHS = 3


def base_config(out: Path) -> PipelineConfig:
    """200 synthetic images at 32 px, ResNet-18, global batch 32, 3 student epochs."""
    return from_dict(PipelineConfig, {
        "out": str(out), "tracking": {"enabled": False},
        "data": {"synthetic_n": 200, "synthetic_size": 48}, "preprocess": {"size": 32},
        "model": {"arch": "resnet18", "embedding_dim": 16},
        "teacher": {"epochs": 1, "clusters": 8, "pca_dim": 8, "batch_size": 32},
        "partition": {"test_clusters": 1},
        "student": {"epochs": EPOCHS, "batch_size": 32, "variants": ["baseline"]}})


@pytest.fixture(scope="module")
def histories(ray_local: None, tmp_path_factory: pytest.TempPathFactory) -> dict[str, pd.DataFrame]:
    """The baseline student's history at (settings, seed) = (new, 0), (old, 0) and (new, 1)."""
    root = tmp_path_factory.mktemp("settings")
    config = base_config(root)
    tracker = TrackedRun()
    preprocessed = workflow.prepare(config, tracker).preprocessed
    teacher, partition = workflow.teacher_and_partition(config, preprocessed, tracker)
    runs = {"new-0": (NEW, 0), "old-0": (OLD, 0), "new-1": (NEW, 1)}
    out = {}
    for name, (resources, seed) in runs.items():
        at = replace(config, resources=resources, seed=seed)
        [student] = train_students(preprocessed, teacher, partition, at, ["baseline"], tracker,
                                   folders=[str(root / name)])
        out[name] = student.read_csv(HISTORY)
    return out


@pytest.mark.slow
def test_old_settings_train_with_ddp_on_two_workers(histories: dict[str, pd.DataFrame]) -> None:
    old, new = histories["old-0"], histories["new-0"]
    assert list(old["epoch"]) == list(range(EPOCHS)) and (old["world_size"] == 2).all()
    assert (new["world_size"] == 1).all()
    assert np.isfinite(old["loss"]).all() and (old["train_s"] > 0).all() and (old["val_s"] > 0).all()


@pytest.mark.slow
def test_loss_curve_at_the_new_settings_stays_within_seed_noise_of_the_old(
        histories: dict[str, pd.DataFrame]) -> None:
    """Same seed and data: the per-epoch training loss of one worker (batch 32) against DDP (2 × 16).

    The two settings cannot match bit for bit: DDP splits each global batch over two shards, each
    worker draws its own permutation of its own shard, and batch norm normalises over 16 images per
    worker instead of 32.  With the same seed they start from the same weights, so if the settings are
    equivalent their curves differ by batch-sampling noise only.  A second seed at the new settings
    changes the initial weights too, so its distance from the first bounds that noise from above: the
    tolerance is twice the largest per-epoch |loss(seed 0) − loss(seed 1)| of this run.  A setting that
    changed the optimisation (a per-worker batch taken as the global one, unscaled gradients, a
    learning rate or loss counted twice) moves the curve by more than the seeds do.
    """
    new, old, other_seed = (histories[k]["loss"].to_numpy() for k in ("new-0", "old-0", "new-1"))
    noise = np.abs(new - other_seed).max()
    assert noise > 0, "two seeds gave the same losses: the seed reaches nothing"
    assert np.abs(new - old).max() <= 2 * noise, (
        f"new {new.round(4)} vs old {old.round(4)}; seed-to-seed difference {noise:.4f}")
    assert new[-1] < new[0] and old[-1] < old[0]  # both learn: the comparison is of two working runs


@pytest.mark.slow
def test_gpu_check_dry_run_prints_every_part() -> None:
    """``gpu.sh --dry-run``: ResNet-50 throughput, faiss k-means and the Ray Train stages, tiny and on the CPU."""
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}  # its own local Ray, not the suite's
    done = subprocess.run(["bash", str(REPO / "jobs" / "benchmarks" / "gpu.sh"), "--dry-run"], cwd=REPO,
                          env={**env, "PYTHON": sys.executable}, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    table = done.stdout[done.stdout.index("GPU check"):]
    for figure in ("(a) ResNet-50 64 px", "(b) faiss k-means on the CPU", "(b) faiss k-means on the GPU: skipped",
                   "(c) teacher epoch: MS-loss training", "(c) student baseline epoch: training",
                   "(c) student layer3+layer4 epoch: training", "(c) student stages wall (2 variants, one fit)"):
        assert figure in table, table
    assert "not installed" not in table and "FAILED" not in table
