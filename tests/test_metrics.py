"""Classification report figures against scikit-learn, and the comparison table."""

from __future__ import annotations

import json
import math
import warnings

import numpy as np
import pytest
from sklearn import metrics as skm

from skin_core.classes import CLASSES
from skin_core.metrics.classification import ClassificationReport, classification_report, comparison_table

K = len(CLASSES)


def fixed_predictions(seed: int, n: int = 40, absent: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Labels covering every class (but ``absent``) and softmax scores that lean towards the truth."""
    rng = np.random.default_rng(seed)
    present = [k for k in range(K) if k != absent]
    y = np.r_[present, rng.choice(present, size=n - len(present))]
    logits = rng.normal(size=(n, K)) + 1.5 * np.eye(K)[y]
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    return y, np.round(probs, 2)  # rounding makes tied scores, which the PR curve must group


def assert_matches_sklearn(report: ClassificationReport, y: np.ndarray, probs: np.ndarray) -> None:
    pred = probs.argmax(axis=1)
    assert report.accuracy == pytest.approx(skm.accuracy_score(y, pred), abs=1e-12)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # sklearn warns when a predicted class is absent from y_true
        assert report.balanced_accuracy == pytest.approx(skm.balanced_accuracy_score(y, pred), abs=1e-12)
    assert report.macro_f1 == pytest.approx(skm.f1_score(y, pred, average="macro", zero_division=0), abs=1e-12)
    p, r, f, s = skm.precision_recall_fscore_support(y, pred, labels=range(K), zero_division=0)
    frame = report.per_class_frame()
    np.testing.assert_allclose(frame["precision"], p, atol=1e-12)
    np.testing.assert_allclose(frame["recall"], r, atol=1e-12)
    np.testing.assert_allclose(frame["f1"], f, atol=1e-12)
    np.testing.assert_array_equal(frame["support"], s)
    np.testing.assert_array_equal(report.confusion, skm.confusion_matrix(y, pred, labels=range(K)))


def assert_curves_match_sklearn(report: ClassificationReport, y: np.ndarray, probs: np.ndarray) -> None:
    for k, name in enumerate(CLASSES):
        if not (y == k).any():
            continue
        precision, recall, thresholds = skm.precision_recall_curve(y == k, probs[:, k])
        curve = report.curves[name]
        np.testing.assert_allclose(curve.precision, precision, atol=1e-12)
        np.testing.assert_allclose(curve.recall, recall, atol=1e-12)
        np.testing.assert_array_equal(curve.thresholds, thresholds)
        assert report.average_precision[name] == pytest.approx(
            skm.average_precision_score(y == k, probs[:, k]), abs=1e-12)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_every_figure_matches_sklearn_with_all_classes(seed: int) -> None:
    y, probs = fixed_predictions(seed)
    report = classification_report(y, probs)
    assert 0.2 < report.accuracy < 1.0  # neither trivial nor perfect
    assert_matches_sklearn(report, y, probs)
    assert_curves_match_sklearn(report, y, probs)
    assert set(report.curves) == set(CLASSES) and report.n == 40


def test_absent_class_has_nan_ap_and_no_curve() -> None:
    scc = CLASSES.index("SCC")
    y, probs = fixed_predictions(3, absent=scc)
    probs[0, :] = 0.0
    probs[0, scc] = 1.0  # predicted once anyway: counts in macro F1 with F1 0
    report = classification_report(y, probs)
    assert_matches_sklearn(report, y, probs)
    assert_curves_match_sklearn(report, y, probs)
    assert math.isnan(report.average_precision["SCC"]) and "SCC" not in report.curves
    assert report.support["SCC"] == 0 and report.f1["SCC"] == 0.0


def test_absent_and_never_predicted_class_is_left_out_of_macro_scores() -> None:
    df = CLASSES.index("DF")
    y, probs = fixed_predictions(4, absent=df)
    probs[:, df] = 0.0
    report = classification_report(y, probs)
    assert_matches_sklearn(report, y, probs)
    present = [c for c in CLASSES if c != "DF"]
    assert report.macro_f1 == pytest.approx(np.mean([report.f1[c] for c in present]))


def test_to_dict_is_json_and_per_class_frame_has_the_columns() -> None:
    y, probs = fixed_predictions(5, absent=CLASSES.index("VASC"))
    report = classification_report(y, probs)
    decoded = json.loads(json.dumps(report.to_dict(), allow_nan=False))
    assert decoded["per_class"]["VASC"]["ap"] is None
    assert decoded["accuracy"] == report.accuracy and np.array(decoded["confusion"]).sum() == 40
    frame = report.per_class_frame()
    assert list(frame.index) == list(CLASSES)
    assert list(frame.columns) == ["precision", "recall", "f1", "support", "ap"]


def test_comparison_table_has_the_paper_layout() -> None:
    reports = {name: classification_report(*fixed_predictions(seed))
               for seed, name in enumerate(["baseline", "AT layer3+layer4", "AT layer4"])}
    table = comparison_table(reports)
    assert table.shape == (3, 3 + K)
    assert list(table.index) == ["baseline", "AT layer3+layer4", "AT layer4"]
    assert list(table.columns) == ["accuracy", "balanced_accuracy", "macro_f1", *(f"F1 {c}" for c in CLASSES)]
    assert table.loc["AT layer4", "F1 NV"] == reports["AT layer4"].f1["NV"]


@pytest.mark.parametrize("y, probs, message", [
    (np.array([0, 1]), np.full((2, K - 1), 0.1), "probs must be"),
    (np.array([0, 8]), np.full((2, K), 0.1), "labels must lie"),
    (np.array([0.0, 1.0]), np.full((2, K), 0.1), "integer"),
    (np.array([], dtype=int), np.zeros((0, K)), "no samples"),
    (np.array([0, 1]), np.array([[np.nan] * K, [0.1] * K]), "NaN"),
])
def test_bad_inputs_are_refused(y: np.ndarray, probs: np.ndarray, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        classification_report(y, probs)
