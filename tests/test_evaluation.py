"""The evaluation's files (raytasks.evaluation): each figure's numbers beside it, checked against scikit-learn."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import precision_recall_curve

from raytasks.evaluation import METRICS, write_report_files
from skin_core.classes import CLASSES
from skin_core.metrics.classification import classification_report

K = len(CLASSES)


def scored(n: int = 150, seed: int = 0, absent: str = "DF") -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Labels without ``absent`` and two models' probabilities (one sharper than the other)."""
    rng = np.random.default_rng(seed)
    labels = rng.choice([k for k in range(K) if CLASSES[k] != absent], size=n)
    models = {}
    for name, strength in (("baseline", 0.8), ("AT layer3+layer4", 2.0)):
        logits = rng.normal(size=(n, K)) + strength * np.eye(K)[labels]
        models[name] = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    return labels, models


@pytest.fixture()
def written(tmp_path: Path) -> tuple[Path, np.ndarray, dict[str, np.ndarray]]:
    labels, models = scored()
    reports = {"val": {name: classification_report(labels, probs) for name, probs in models.items()}}
    write_report_files(reports, {}, str(tmp_path))
    return tmp_path, labels, models


def test_pr_points_are_sklearns_curves(written: tuple[Path, np.ndarray, dict[str, np.ndarray]]) -> None:
    folder, labels, models = written
    points = pd.read_csv(folder / "pr_curves_val.csv")
    present = [c for k, c in enumerate(CLASSES) if (labels == k).any()]
    assert set(points["model"]) == set(models) and set(points["class"]) == set(present)  # no curve for DF
    for (model, cls), curve in points.groupby(["model", "class"], sort=False):
        k = CLASSES.index(cls)
        precision, recall, thresholds = precision_recall_curve(labels == k, models[model][:, k])
        np.testing.assert_allclose(curve["precision"], precision)
        np.testing.assert_allclose(curve["recall"], recall)
        np.testing.assert_allclose(curve["threshold"].iloc[:-1], thresholds)
        assert np.isnan(curve["threshold"].iloc[-1])  # the closing (recall 0, precision 1) point


def test_confusion_counts_are_the_labels_against_the_argmax(
        written: tuple[Path, np.ndarray, dict[str, np.ndarray]]) -> None:
    folder, labels, models = written
    for model, stem in (("baseline", "baseline"), ("AT layer3+layer4", "AT_layer3-layer4")):
        table = pd.read_csv(folder / f"confusion_{stem}_val.csv", index_col=0)
        assert list(table.index) == list(table.columns) == list(CLASSES)
        expected = np.zeros((K, K), int)
        np.add.at(expected, (labels, models[model].argmax(axis=1)), 1)
        np.testing.assert_array_equal(table.to_numpy(), expected)
        assert table.sum(axis=1).tolist() == np.bincount(labels, minlength=K).tolist()
        metrics = json.loads((folder / METRICS).read_text())["val"][model]
        assert metrics["confusion"] == expected.tolist()
        assert metrics["accuracy"] == pytest.approx(np.trace(expected) / len(labels))
