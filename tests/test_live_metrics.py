"""A training stage's epochs reach the tracking server while the stage still runs (live curves in the MLflow UI)."""

from __future__ import annotations

import threading
from dataclasses import replace
from pathlib import Path

import pytest
from mlflow import MlflowClient

from conftest import tiny_config
from raytasks.tracking import tracked_run
from raytasks.workflow import prepare, students, teacher_and_partition

pytestmark = pytest.mark.slow

METRIC, EPOCHS = "val_balanced_accuracy", 3


class Watcher(threading.Thread):
    """Polls the server, as the MLflow UI does, for the student run's epochs; records those it saw while the
    run was still RUNNING (metrics read first, status after: the epoch was there before the stage ended)."""

    def __init__(self, uri: str, experiment: str) -> None:
        super().__init__(daemon=True)
        self.client, self.experiment = MlflowClient(uri), experiment
        self.seen_running: set[int] = set()
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.wait(0.5):
            experiment = self.client.get_experiment_by_name(self.experiment)
            runs = self.client.search_runs([experiment.experiment_id], "attributes.run_name = 'student:baseline'") \
                if experiment else []
            for run in runs:
                steps = {m.step for m in self.client.get_metric_history(run.info.run_id, METRIC)}
                if steps and self.client.get_run(run.info.run_id).info.status == "RUNNING":
                    self.seen_running |= steps


@pytest.mark.usefixtures("ray_local")
def test_epoch_metrics_are_on_the_server_before_the_stage_ends(mlflow_server: str, tmp_path: Path,
                                                                capfd: pytest.CaptureFixture) -> None:
    config = tiny_config(str(tmp_path / "run"), variants=("baseline",),
                         tracking={"tracking_uri": mlflow_server, "experiment": "live-metrics"})
    config = replace(config, student=replace(config.student, epochs=EPOCHS))
    watcher = Watcher(mlflow_server, "live-metrics")
    watcher.start()
    try:
        with tracked_run(config, "pipeline", {}) as tracker:
            prepared = prepare(config, tracker)
            teacher, partition = teacher_and_partition(config, prepared.preprocessed, tracker)
            (student,) = students(config, prepared.preprocessed, teacher, partition, tracker)
    finally:
        watcher.stop.set()
        watcher.join(timeout=30)

    assert watcher.seen_running & set(range(EPOCHS - 1)), \
        f"no epoch before the last was visible while the stage ran (saw {sorted(watcher.seen_running)})"
    client = MlflowClient(mlflow_server)
    assert client.get_run(student.run_id).info.status == "FINISHED"
    assert sorted(m.step for m in client.get_metric_history(student.run_id, METRIC)) == list(range(EPOCHS))
    # and one progress line per epoch on the console (the Train controller's, forwarded by Ray)
    output = capfd.readouterr()
    lines = [l for l in (output.out + output.err).splitlines() if "student:baseline" in l and " epoch " in l]
    assert [l.split(" epoch ")[1].split()[0] for l in lines] == [f"{e}/{EPOCHS}" for e in range(1, EPOCHS + 1)], lines
