"""MLflow tracking and the Ray Tune sweep against a real ``mlflow server`` (SQLite backend, S3 artifacts)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pandas as pd
import pytest
from mlflow import MlflowClient

from conftest import MLFLOW_BUCKET, _free_port, tiny_config
from raytasks.registry import tracking_at
from raytasks.tracking import (LOCAL_ARTIFACTS, LOCAL_DB, PARENT_TAG, TrackedRun, TrackingError, metric_name,
                               open_run, resolve_uri)
from raytasks.student import student_stage
from raytasks.tune import run_tune, search_space, trial_config
from raytasks.workflow import prepare, teacher_and_partition
from skin_core.layers import all_layer_sets
from skin_core import storage
from skin_core.config import TrackingConfig, TuneConfig


def test_an_unreachable_server_fails_fast_and_clearly(tmp_path: Path) -> None:
    uri = f"http://127.0.0.1:{_free_port()}"  # nothing listens there
    start = time.monotonic()
    with pytest.raises(TrackingError, match=rf"{uri} is unreachable.*tracking.enabled=false"):
        open_run(tiny_config(str(tmp_path), tracking={"tracking_uri": uri, "timeout_s": 3}), "pipeline", {})
    assert time.monotonic() - start < 10


def test_search_space_covers_the_fifteen_layer_sets() -> None:
    sets = all_layer_sets()
    assert len(sets) == len(set(sets)) == 15 and "layer1+layer2+layer3+layer4" in sets
    space = search_space(TuneConfig(layers=("layer3", "layer4"), layers_grid=True, clusters=(16,)))
    assert space["variant"] == {"grid_search": ["layer3", "layer4"]} and space["clusters"] == 16


MODEL = "sweep-student"


def sweep_config(out: str, tracking_uri: str):
    config = tiny_config(out, tracking={"tracking_uri": tracking_uri, "experiment": "sweep-test",
                                            "registered_model": MODEL})  # the server is shared by the session
    tune = TuneConfig(num_samples=1, layers=("layer2", "layer3"), layers_grid=True, clusters=(8,), ms_alpha=(2.0,),
                      ms_beta=(50.0,), ms_base=(1.0,), at_beta=(1000.0,), lr=(0.01,))
    return replace(config, tune=tune)


def block_student(config, variant: str) -> None:
    """Make one trial fail late, for real: a file where its student's stage folder goes (its teacher is trained
    here, and the sweep reuses it)."""
    prepared = prepare(config, TrackedRun())
    t = config.tune
    point = {"ms_alpha": t.ms_alpha[0], "ms_beta": t.ms_beta[0], "ms_base": t.ms_base[0],
             "miner_epsilon": t.miner_epsilon[0], "clusters": t.clusters[0], "at_beta": t.at_beta[0],
             "variant": variant, "lr": t.lr[0]}
    trial = trial_config(config, point)
    teacher, partition = teacher_and_partition(trial, prepared.preprocessed, TrackedRun())
    folder = Path(student_stage(prepared.preprocessed, teacher, partition, trial, variant, fit=None).folder_in(trial.out))
    folder.parent.mkdir(parents=True, exist_ok=True)
    folder.write_text("not a folder")


@pytest.mark.usefixtures("ray_local")
def test_sweep_tracks_trials_registers_the_champion_and_stores_artifacts_in_s3(
        tmp_path: Path, mlflow_server: str, s3_env: str, sample_dataset: Path) -> None:
    config = sweep_config(str(tmp_path / "sweep"), mlflow_server)
    block_student(config, "layer2")
    result = run_tune(config)
    table = result.table
    assert sorted(table["variant"]) == ["layer2", "layer3"]
    status = dict(zip(table["variant"], table["status"]))
    assert status["layer3"] == "ok" and status["layer2"].startswith("failed: NotADirectoryError")
    # both trials asked for the same teacher settings: one teacher was trained and shared
    assert len([d for d in (tmp_path / "sweep" / "teacher").iterdir() if d.is_dir()]) == 1

    client = MlflowClient(mlflow_server)
    experiment = client.get_experiment_by_name("sweep-test")
    children = client.search_runs([experiment.experiment_id], f"tags.`{PARENT_TAG}` = '{result.mlflow_run}'")
    assert {r.info.run_name for r in children if "stage" in r.data.tags} == {"preprocess"}  # the sweep's own stage
    by_variant = {r.data.params["variant"]: r for r in children if "trial_name" in r.data.tags}
    assert set(by_variant) == {"layer2", "layer3"}
    assert by_variant["layer2"].info.status == "FAILED" and by_variant["layer3"].info.status == "FINISHED"
    history = client.get_metric_history(by_variant["layer3"].info.run_id, "val_balanced_accuracy")
    # one value per epoch as Ray Train reported it, then the trial's closing report of the kept epoch's figure
    assert len(history) == sweep_config(str(tmp_path), mlflow_server).student.epochs + 1
    final = max(history, key=lambda m: m.step).value
    assert final == pytest.approx(table.loc[table["variant"] == "layer3", "val_balanced_accuracy"].item(), abs=1e-9)
    parent_files = {a.path for a in client.list_artifacts(result.mlflow_run)}
    assert {"config.yaml", "sweep_summary.csv"} <= parent_files

    version = client.get_model_version_by_alias(MODEL, "champion")
    assert result.registered == f"{MODEL}/{version.version}"
    assert any(key.endswith("MLmodel") for key in storage.list_tree(f"s3://{MLFLOW_BUCKET}"))
    # a fresh process loads the champion from the registry and predicts a real image
    image = sorted((sample_dataset / "ISIC_2019_Training_Input").glob("*.jpg"))[0]
    code = (f"import mlflow, pandas as pd, sys; m = mlflow.pyfunc.load_model('models:/{MODEL}@champion');"
            "out = m.predict(pd.DataFrame({'path': [sys.argv[1]]})); print(out.drop(columns='error').sum(axis=1)[0])")
    env = {**os.environ, "MLFLOW_TRACKING_URI": mlflow_server}
    loaded = subprocess.run([sys.executable, "-c", code, str(image)], capture_output=True, text=True, env=env,
                            timeout=300)
    assert loaded.returncode == 0, loaded.stderr[-3000:]
    assert float(loaded.stdout.strip().splitlines()[-1]) == pytest.approx(1.0, abs=1e-4)


def test_metric_names_are_made_valid_for_mlflow() -> None:
    assert metric_name("accuracy.val.AT layer3+layer4") == "accuracy.val.AT layer3_layer4"
    assert metric_name("val/F1 MEL:1") == "val/F1 MEL:1"


def test_tracking_scope_leaves_no_uri_behind(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """mlflow.set_tracking_uri exports MLFLOW_TRACKING_URI; a later job or subprocess must not inherit ours."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    uri = f"sqlite:///{tmp_path / 'x.db'}"
    with tracking_at(uri):
        assert os.environ["MLFLOW_TRACKING_URI"] == uri
    assert "MLFLOW_TRACKING_URI" not in os.environ
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:1")
    with tracking_at(uri):
        pass
    assert os.environ["MLFLOW_TRACKING_URI"] == "http://127.0.0.1:1"


def test_tracking_uri_comes_from_the_config_then_the_environment_then_a_local_store(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    env = {"MLFLOW_TRACKING_URI": "http://127.0.0.1:5000"}
    assert resolve_uri(TrackingConfig(tracking_uri="http://127.0.0.1:6000"), "s3://b/run", env) == (
        "http://127.0.0.1:6000", None)
    assert resolve_uri(TrackingConfig(), "s3://b/run", env) == ("http://127.0.0.1:5000", None)
    out = tmp_path / "out"
    assert resolve_uri(TrackingConfig(), str(out), {}) == (f"sqlite:///{out / LOCAL_DB}",
                                                           (out / LOCAL_ARTIFACTS).as_uri())
    # outputs on S3 and no URI: SQLite needs a local file (./runs), the artifacts go beside the outputs
    monkeypatch.chdir(tmp_path)
    assert resolve_uri(TrackingConfig(), "s3://bucket/runs/x", {}) == (
        f"sqlite:///{tmp_path / 'runs' / LOCAL_DB}", "s3://bucket/runs/x/mlartifacts")
    assert (tmp_path / "runs").is_dir() and not (tmp_path / "runs" / LOCAL_DB).exists()


def test_tracking_off_is_an_inert_run_that_writes_nowhere(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    env = {"MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'env.db'}"}
    run = open_run(tiny_config(str(tmp_path / "out"), tracking={"enabled": False}), "pipeline", env)
    assert not run.enabled and run.run_id == "" and run.child("stage") is run
    run.log_metrics({"a": 1.0})
    run.log_params({"p": 1})
    run.finish(failed=True)
    assert run.hint() == "tracking off (tracking.enabled=false)" and run.children() == []
    assert list(tmp_path.iterdir()) == []  # no store, no output folder, no ./mlruns


def test_a_historys_wall_clock_stamps_are_not_logged_as_metrics(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    env = {"MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path}/m.db"}
    run = open_run(tiny_config(str(tmp_path / "out")), "pipeline", env)
    run.log_history(pd.DataFrame({"epoch": [0, 1], "loss": [1.0, 0.5], "start_time": [1.8e9, 1.8e9 + 30]}))
    assert run.client.get_run(run.run_id).data.metrics == {"loss": 0.5}
    run.finish()
