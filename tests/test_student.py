"""The students on Ray Train (raytasks.student): a worker killed mid-fit, the kept epoch, class weights.

The fits reuse the preprocessed set, teacher and partition of the session's tiny pipeline run (120 images at
32 px) and train their own student stages beside it.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from mlflow import MlflowClient

from conftest import killing_a_train_worker, tiny_config
from raytasks.partition import splits
from raytasks.pipeline import PipelineResult
from raytasks.preprocess import read_table
from raytasks.runtime import WorkerPlan
from raytasks.stages import StageOutput
from raytasks.student import HISTORY, LAST_WEIGHTS, StudentsFit, StudentSummary, train_students
from skin_core.training.student import class_weights
from raytasks.tracking import TrackedRun, tracked_run
from skin_core import storage
from skin_core.classes import CLASSES
from skin_core.config import PipelineConfig
from skin_core.metrics.classification import classification_report
from skin_core.models.bundle import load_bundle
from skin_core.preprocessing.pipeline import decode_pngs
from skin_core.training.student import predict_probs

EPOCHS = 5  # the kill lands after layer3's first epoch: four more leave the watcher time to act mid-fit


def student_config(out: Path, **student: object) -> PipelineConfig:
    config = tiny_config(str(out), variants=("baseline", "layer3"))
    return replace(config, student=replace(config.student, epochs=EPOCHS, **student))


@dataclass(frozen=True)
class Resumed:
    students: list[StageOutput[StudentSummary]]
    killed: list[int]
    tracking_uri: str


@pytest.fixture(scope="module")
def resumed(tiny_run: PipelineResult, tmp_path_factory: pytest.TempPathFactory) -> Resumed:
    """Baseline then layer3 in one fit, kept by macro F1; the worker is killed once layer3 has a checkpoint."""
    out = tmp_path_factory.mktemp("resume")
    config = student_config(out, select_metric="macro_f1")
    with tracked_run(config, "pipeline", {}) as tracker:  # the local store under ``out``: live epochs land there
        with killing_a_train_worker(out / "student", accept=lambda state: state["variant"] == "layer3") as killed:
            students = train_students(tiny_run.preprocessed, tiny_run.teacher, tiny_run.partition, config,
                                      config.student.variants, tracker)
    return Resumed(students, killed, tracker.uri)


def test_a_killed_worker_resumes_and_every_epoch_of_every_variant_runs_once(resumed: Resumed) -> None:
    assert resumed.killed, "no worker was killed: the fit ended before layer3's first checkpoint"
    client = MlflowClient(resumed.tracking_uri)
    for student in resumed.students:
        history = student.read_csv(HISTORY)
        assert history["epoch"].tolist() == list(range(EPOCHS)), student.summary.variant
        # the progress callback logs each epoch as Ray Train receives it: a repeated epoch would show twice
        steps = sorted(m.step for m in client.get_metric_history(student.run_id, "loss"))
        assert steps == list(range(EPOCHS)), student.summary.variant
    baseline, layer3 = (s.read_csv(HISTORY) for s in resumed.students)
    assert (baseline["attempt_first_epoch"] == 0).all()  # finished before the kill: not trained again
    assert (layer3["attempt_first_epoch"] > 0).any()  # the restarted worker went on after layer3's checkpoint
    assert layer3["attempt_first_epoch"].is_monotonic_increasing


def val_metric(model: torch.nn.Module, tiny_run: PipelineResult, metric: str) -> float:
    """``model``'s validation figure, computed here from the published images and split."""
    table = splits(tiny_run.partition)
    val = read_table(tiny_run.preprocessed, columns=["image_id", "image", "label_idx"],
                     image_ids=table.loc[table["split"] == "val", "image_id"].tolist())
    probs = predict_probs(model, decode_pngs(list(val["image"])))
    return getattr(classification_report(val["label_idx"].to_numpy(), probs), metric)


def test_the_kept_weights_are_those_of_the_epoch_the_history_names(resumed: Resumed,
                                                                   tiny_run: PipelineResult) -> None:
    """By ``student.select_metric`` (macro F1 here), across the resume: re-evaluated, they score the history's best."""
    for student in resumed.students:
        s, history = student.summary, student.read_csv(HISTORY)
        assert s.epochs == EPOCHS and s.best_epoch == int(history["val_macro_f1"].idxmax())
        assert s.best == pytest.approx(history["val_macro_f1"].max(), abs=1e-12)
        assert s.last == pytest.approx(history["val_macro_f1"].iloc[-1], abs=1e-12)
        kept, _ = load_bundle(student.folder)
        last = torch.load(io.BytesIO(storage.read_bytes(student.file(LAST_WEIGHTS))), weights_only=True)
        assert val_metric(kept, tiny_run, "macro_f1") == pytest.approx(s.best, abs=1e-9)
        same = all(torch.equal(a, last[k]) for k, a in kept.state_dict().items())
        assert same == (s.best_epoch == EPOCHS - 1), s
        kept.load_state_dict(last)
        assert val_metric(kept, tiny_run, "macro_f1") == pytest.approx(s.last, abs=1e-9)


def test_class_weights_by_hand() -> None:
    labels = pd.Series(["NV"] * 6 + ["MEL"] * 3 + ["BCC"])
    # inverse frequencies 1/6, 1/3, 1 scaled to mean 1 over the three present classes; absent classes 0
    expected = dict.fromkeys(CLASSES, 0.0) | {"NV": 1 / 3, "MEL": 2 / 3, "BCC": 2.0}
    np.testing.assert_allclose(class_weights(labels, "weighted_ce"), [expected[c] for c in CLASSES])
    assert class_weights(labels, "none") == ()
    with pytest.raises(ValueError, match="unknown mode 'focal'"):
        class_weights(labels, "focal")


def test_weighted_cross_entropy_reaches_the_loss(resumed: Resumed, tiny_run: PipelineResult,
                                                 tmp_path: Path) -> None:
    """The same baseline fit with ``student.imbalance=weighted_ce``: the train labels' weights go to the workers
    and change the loss the students minimise."""
    config = student_config(tmp_path, imbalance="weighted_ce")
    fit = StudentsFit(tiny_run.preprocessed, tiny_run.teacher, tiny_run.partition, config)
    fit.add("baseline", str(tmp_path / "unused"), TrackedRun())
    (spec,) = fit._specs(WorkerPlan(1, 1.0, False, 2))
    table = splits(tiny_run.partition)
    assert spec.class_weights == class_weights(table.loc[table["split"] == "train", "label"], "weighted_ce")
    (weighted,) = train_students(tiny_run.preprocessed, tiny_run.teacher, tiny_run.partition, config, ["baseline"],
                                 TrackedRun())
    # the unweighted baseline of the resumed fit: same seed, data and learning rate in its first epoch
    plain, ce = resumed.students[0].read_csv(HISTORY)["ce"], weighted.read_csv(HISTORY)["ce"]
    assert abs(ce.iloc[0] - plain.iloc[0]) > 1e-3, (ce.iloc[0], plain.iloc[0])
