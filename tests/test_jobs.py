"""The ``ray job submit`` entrypoints in jobs/: each answers --help, and one really runs against this session's Ray."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO_ROOT
from raytasks.pipeline import PipelineResult
from raytasks.preprocess import PreprocessSummary
from raytasks.stages import load_output

# entrypoint → the ``skin`` subcommand it runs and an option only that subcommand has
ENTRYPOINTS = {"pipeline.py": ("pipeline", "--set"), "tune.py": ("tune", "--set"),
               "preprocess.py": ("preprocess", "--size"), "train_teacher.py": ("teacher", "--data"),
               "train_student.py": ("student", "--variant")}


def job(script: str, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    """``python jobs/<script> ARGS`` from the repository root, as ``ray job submit`` runs it."""
    env = {**os.environ, **(env or {}), "PYTHONPATH": os.pathsep.join([str(REPO_ROOT), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run([sys.executable, f"jobs/{script}", *args], capture_output=True, text=True, timeout=600,
                          cwd=REPO_ROOT, env=env)


@pytest.mark.parametrize("script", sorted(ENTRYPOINTS))
def test_every_entrypoint_answers_help(script: str) -> None:
    command, option = ENTRYPOINTS[script]
    result = job(script, "--help")
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.startswith(f"usage: skin {command} ") and option in result.stdout


@pytest.mark.slow
def test_the_preprocess_job_joins_the_cluster_and_publishes_the_same_output(tiny_run: PipelineResult,
                                                                           tmp_path: Path) -> None:
    """Run as a submitted job would (RAY_ADDRESS set): the shards match the pipeline's, key and counts."""
    import ray

    address = ray.get_runtime_context().gcs_address
    out = tmp_path / "preprocessed"
    result = job("preprocess.py", "--profile", "smoke", "--data", tiny_run.data_path, "--out", str(out),
                 env={"RAY_ADDRESS": address})
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    published = load_output(str(out), PreprocessSummary)
    assert published.key == tiny_run.preprocessed.key
    assert published.summary.written == tiny_run.preprocessed.summary.written == 120
    assert f"output           {out}" in result.stdout
