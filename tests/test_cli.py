"""The ``skin`` command end to end: synth → info round trip, preprocess, the pipeline entrypoint."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from raytasks.pipeline import run_pipeline
from skin_core import storage
from skin_core.config import PipelineConfig, from_dict


def tiny_pipeline(out: str) -> PipelineConfig:
    """The smallest pipeline that still exercises every stage (a minute on 2 cores)."""
    return from_dict(PipelineConfig, {
        "profile": "test", "out": out, "data": {"synthetic_n": 120, "synthetic_size": 48},
        "preprocess": {"size": 32}, "model": {"arch": "resnet18", "embedding_dim": 16},
        "teacher": {"epochs": 1, "clusters": 8, "pca_dim": 8, "batch_size": 16},
        "partition": {"test_clusters": 1},
        "resources": {"num_workers": 2, "cpus_per_worker": 0.5, "data_cpus": 1.0}})


def skin(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "skin_cli", *args], capture_output=True, text=True, timeout=300)


def counts_line(stdout: str, prefix: str) -> dict[str, int]:
    line = next(l for l in stdout.splitlines() if l.startswith(prefix))
    words = line[len(prefix):].split()
    return {words[i]: int(words[i + 1]) for i in range(0, len(words), 2)}


def test_synth_round_trips_through_info(tmp_path: Path) -> None:
    made = skin("synth", "--out", str(tmp_path / "syn"), "--n", "60", "--size", "64", "--seed", "3")
    assert made.returncode == 0, made.stderr
    info = skin("info", "--data", str(tmp_path / "syn"), "--json")
    assert info.returncode == 0, info.stderr
    summary = json.loads(info.stdout)
    assert summary["images"] == 60 and summary["rejects"] == {}
    assert summary["per_class"] == counts_line(made.stdout, "per class:")
    assert summary["per_origin"] == counts_line(made.stdout, "per origin:")
    factors = pd.read_csv(tmp_path / "syn" / "synth_factors.csv")
    assert factors["label"].value_counts().to_dict() == {k: v for k, v in summary["per_class"].items() if v}


def test_bad_synth_arguments_are_one_clear_line(tmp_path: Path) -> None:
    result = skin("synth", "--out", str(tmp_path / "x"), "--n", "5")
    assert result.returncode == 2 and "Traceback" not in result.stderr and "skin synth: error" in result.stderr


@pytest.mark.usefixtures("ray_local")
def test_pipeline_on_the_synthetic_default_is_idempotent(tmp_path: Path) -> None:
    config = tiny_pipeline(str(tmp_path / "run"))
    first = run_pipeline(config)
    assert first.dataset.images == 120 and first.preprocessed.counts["written"] == 120
    assert first.teacher.publication.counts["images"] == 120
    splits = first.partition.table()
    assert len(splits) == 120 and set(splits["split"]) == {"train", "val", "test"}
    assert set(first.factor_nmi) >= {"label", "origin", "border", "hair", "ruler", "lighting"}
    for section in ("borders removed", "per class", "cluster NMI", "held-out clusters"):
        assert section in first.report
    again = run_pipeline(config)
    assert again.preprocessed.reused and again.teacher.reused and again.partition.reused
    assert again.data_path == first.data_path


@pytest.mark.usefixtures("ray_local")
def test_pipeline_with_everything_on_s3(s3_bucket: str) -> None:
    result = run_pipeline(tiny_pipeline(f"{s3_bucket}/run"))
    assert result.data_path.startswith(s3_bucket) and result.preprocessed.counts["written"] == 120
    for stage in (result.preprocessed, result.teacher, result.partition):
        assert all(uri.startswith(f"{s3_bucket}/run/") for uri in stage.publication.uris())
    # Ray Train checkpoints went to the bucket too
    assert any("checkpoint_" in key for key in storage.list_tree(f"{s3_bucket}/run/teacher"))
