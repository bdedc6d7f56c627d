"""The stage runner (raytasks.stages) on a trivial stage: no Ray, a local SQLite MLflow store."""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest
from mlflow import MlflowClient

from conftest import tiny_config
from raytasks.stages import Stage, StageContext, load_output, run_stage, summary_from
from raytasks.tracking import TrackedRun, tracked_run
from skin_core.publish import MARKER, PublishError, read_publication


@dataclass(frozen=True)
class CountSummary:
    rows: int
    sizes: tuple[int, ...]
    score: float = float("nan")


def counting_stage(calls: list[str], inputs: dict | None = None, fail: bool = False) -> Stage[CountSummary]:
    """A stage that records each write, publishes a table, a history and a weights file, and may raise."""

    def write(context: StageContext) -> CountSummary:
        calls.append(context.run_uri)
        context.write_csv("table.csv", pd.DataFrame({"a": [1, 2, 3]}))
        context.write_csv("history.csv", pd.DataFrame({"epoch": [0, 1], "loss": [2.0, 1.5]}))
        context.write_bytes("weights.bin", b"w" * 10)
        if fail:
            raise RuntimeError("the stage broke after writing its files")
        return CountSummary(rows=3, sizes=(2, 1), score=0.75)

    return Stage("count", inputs or {"data": "abc", "k": 3}, CountSummary, write, params={"count.k": 3},
                 history="history.csv", exclude=(".bin",))


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The default local tracking store (SQLite, artifacts beside it) under one folder for the module."""
    return tmp_path_factory.mktemp("tracked")


def parent(store: Path):  # noqa: ANN201 - the tracked_run context manager
    """A pipeline's parent run; no URI in the config or the environment: the local store under ``store``."""
    return tracked_run(tiny_config(str(store)), "pipeline", {})


def test_a_finished_stage_is_written_once_then_reused(tmp_path: Path) -> None:
    calls: list[str] = []
    out = str(tmp_path / "count")
    first = run_stage(counting_stage(calls), out, TrackedRun())
    again = run_stage(counting_stage(calls), out, TrackedRun())
    assert len(calls) == 1 and not first.reused and again.reused
    assert again.summary == first.summary == CountSummary(3, (2, 1), 0.75)
    assert isinstance(again.summary.sizes, tuple)  # JSON lists come back as the declared tuples
    assert again.folder == first.folder == calls[0] and again.key == first.key
    assert again.read_csv("table.csv")["a"].tolist() == [1, 2, 3]
    assert again.has("weights.bin") and not again.has("other.csv")
    with pytest.raises(PublishError, match="published no other.csv"):
        again.file("other.csv")


def test_the_typed_summary_round_trips_through_the_marker(tmp_path: Path) -> None:
    out = tmp_path / "count"
    written = run_stage(counting_stage([]), str(out), TrackedRun())
    marker = json.loads((out / MARKER).read_text())
    assert marker["counts"] == dataclasses.asdict(written.summary) | {"sizes": [2, 1]}
    assert marker["extra"] == {"inputs": {"data": "abc", "k": 3}} and marker["config_hash"] == written.key
    assert load_output(str(out), CountSummary).summary == written.summary
    assert math.isnan(summary_from(CountSummary, {"rows": 1, "sizes": [4]}).score)  # a default fills the gap
    with pytest.raises(PublishError, match="lacks 'sizes' of CountSummary"):
        summary_from(CountSummary, {"rows": 1})


def test_inputs_name_the_folder_and_another_key_is_refused(tmp_path: Path) -> None:
    a, b = counting_stage([], {"data": "abc", "k": 3}), counting_stage([], {"k": 3, "data": "abc"})
    c = counting_stage([], {"data": "abc", "k": 4})
    assert a.folder_in(str(tmp_path)) == b.folder_in(str(tmp_path)) == str(tmp_path / "count" / a.key[:12])
    assert c.folder_in(str(tmp_path)) != a.folder_in(str(tmp_path))
    run_stage(a, str(tmp_path / "shared"), TrackedRun())
    with pytest.raises(PublishError, match="already holds output made with config"):
        run_stage(c, str(tmp_path / "shared"), TrackedRun())


def test_a_raising_write_publishes_nothing_and_ends_its_run_failed(tmp_path: Path, store: Path) -> None:
    out = str(tmp_path / "count")
    calls: list[str] = []
    with pytest.raises(RuntimeError, match="stage broke"):
        with parent(store) as tracker:
            run_stage(counting_stage(calls, fail=True), out, tracker)
    assert read_publication(out) is None and Path(calls[0]).is_dir()  # files written, never published
    client = MlflowClient(tracker.uri)
    assert client.get_run(tracker.run_id).info.status == "FAILED"
    (child,) = tracker.children()
    assert child.info.run_name == "count" and child.info.status == "FAILED"
    # the next attempt starts clean: the abandoned folder goes, one run folder is published
    done = run_stage(counting_stage(calls), out, TrackedRun())
    assert not Path(calls[0]).exists() and done.folder == calls[1] and not done.reused


def test_a_tracked_stage_logs_params_summary_files_and_on_reuse_its_history(tmp_path: Path, store: Path) -> None:
    out = str(tmp_path / "count")
    with parent(store) as tracker:
        ran = run_stage(counting_stage([]), out, tracker)
        reused = run_stage(counting_stage([]), out, tracker)
    client = MlflowClient(tracker.uri)
    runs = {r.info.run_id: r for r in tracker.children()}
    first, second = runs[ran.run_id], runs[reused.run_id]
    assert first.info.status == second.info.status == "FINISHED"
    assert (first.data.tags["reused"], second.data.tags["reused"]) == ("false", "true")
    assert first.data.tags["stage"] == "count" and first.data.tags["output"] == out
    assert first.data.params == {"count.k": "3"}
    assert first.data.metrics == {"rows": 3.0, "score": 0.75}  # lists are not metrics
    artifacts = {a.path for a in client.list_artifacts(ran.run_id)}
    assert artifacts == {"table.csv", "history.csv"}  # the excluded weights stay out of MLflow
    losses = client.get_metric_history(reused.run_id, "loss")
    assert sorted((m.step, m.value) for m in losses) == [(0, 2.0), (1, 1.5)]
    assert client.get_metric_history(ran.run_id, "loss") == []  # a fresh stage logs its epochs itself
