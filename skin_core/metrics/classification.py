"""Classification figures of the paper's tables and PR curves, from labels and class probabilities.

Implemented in numpy (scikit-learn serves as the tests' oracle) so the
conventions are visible here and match scikit-learn 1.9:

* prediction = ``argmax`` of the probabilities (ties go to the first class in
  ``CLASSES`` order);
* per-class precision, recall and F1 use ``zero_division = 0``; F1 is
  ``2·TP / (2·TP + FP + FN)``;
* balanced accuracy = mean recall over the classes present in ``y_true``
  (``balanced_accuracy_score``);
* macro F1 = mean F1 over the classes present in ``y_true`` or predicted
  (``f1_score(average="macro")``), so a class absent from a test set and never
  predicted does not count as a 0;
* PR curves are one-vs-rest on ``probs[:, k]`` over every distinct score
  (``precision_recall_curve``); average precision is the step-function sum
  ``Σ (R_n − R_{n−1}) P_n`` (``average_precision_score``).  For a class absent
  from ``y_true`` recall is undefined: its AP is NaN and it has no curve.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from skin_core.classes import CLASSES

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class PRCurve:
    """One class's precision-recall curve, as ``precision_recall_curve`` returns it.

    ``precision`` and ``recall`` have one more point than ``thresholds`` (the
    final (recall 0, precision 1) point); recall decreases, thresholds increase.
    """

    precision: np.ndarray
    recall: np.ndarray
    thresholds: np.ndarray


@dataclass(frozen=True)
class ClassificationReport:
    """Every figure of one model on one set; per-class dicts are keyed and ordered by ``classes``."""

    classes: tuple[str, ...]
    n: int
    accuracy: float
    balanced_accuracy: float
    macro_f1: float
    precision: dict[str, float]
    recall: dict[str, float]
    f1: dict[str, float]
    support: dict[str, int]
    average_precision: dict[str, float]  # NaN for classes absent from y_true
    confusion: np.ndarray  # len(classes)² ints, rows true, columns predicted
    curves: dict[str, PRCurve] = field(repr=False)  # only classes present in y_true

    def per_class_frame(self) -> pd.DataFrame:
        """Rows = classes; columns precision, recall, f1, support, ap."""
        frame = pd.DataFrame({"precision": self.precision, "recall": self.recall, "f1": self.f1,
                              "support": self.support, "ap": self.average_precision}, index=list(self.classes))
        frame.index.name = "class"
        return frame

    def to_dict(self) -> dict:
        """JSON-ready summary (no curves; NaN becomes None)."""
        per_class = {c: {"precision": self.precision[c], "recall": self.recall[c], "f1": self.f1[c],
                         "support": self.support[c], "ap": _json_float(self.average_precision[c])}
                     for c in self.classes}
        return {"n": self.n, "accuracy": self.accuracy, "balanced_accuracy": self.balanced_accuracy,
                "macro_f1": self.macro_f1, "classes": list(self.classes), "per_class": per_class,
                "confusion": self.confusion.tolist()}


def _json_float(value: float) -> float | None:
    return None if math.isnan(value) else value


def check_inputs(y_true: np.ndarray, probs: np.ndarray, n_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """Integer labels in range and an N×n_classes finite score matrix; ValueError otherwise."""
    y, p = np.asarray(y_true), np.asarray(probs, dtype=np.float64)
    if y.ndim != 1 or y.dtype.kind not in "iu":
        raise ValueError(f"y_true must be a 1-D integer array, got shape {y.shape} dtype {y.dtype}")
    if p.shape != (len(y), n_classes):
        raise ValueError(f"probs must be {len(y)}×{n_classes} (N×classes), got {p.shape}")
    if len(y) == 0:
        raise ValueError("no samples: a report needs at least one prediction")
    if y.min() < 0 or y.max() >= n_classes:
        raise ValueError(f"labels must lie in [0, {n_classes}), got [{y.min()}, {y.max()}]")
    if not np.isfinite(p).all():
        raise ValueError("probs contain NaN or infinite values")
    return y.astype(np.int64), p


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> np.ndarray:
    """n_classes² counts, rows true class, columns predicted class."""
    flat = np.bincount(n_classes * y_true + y_pred, minlength=n_classes * n_classes)
    return flat.reshape(n_classes, n_classes).astype(np.int64)


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """``num / den`` with 0 where ``den`` is 0 (scikit-learn's ``zero_division=0``)."""
    return np.divide(num, den, out=np.zeros(len(num)), where=den > 0)


def per_class_scores(confusion: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(precision, recall, F1) per class from the confusion matrix."""
    tp = np.diag(confusion).astype(np.float64)
    predicted, actual = confusion.sum(axis=0), confusion.sum(axis=1)
    fp, fn = predicted - tp, actual - tp
    return _ratio(tp, predicted), _ratio(tp, actual), _ratio(2 * tp, 2 * tp + fp + fn)


def binary_clf_curve(positive: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(false positives, true positives, threshold) at each distinct score, highest score first."""
    order = np.argsort(scores, kind="mergesort")[::-1]
    scores, positive = scores[order], positive[order]
    # The last index of each run of equal scores: samples tied on a score are cut together.
    ends = np.r_[np.flatnonzero(np.diff(scores)), len(scores) - 1]
    tps = np.cumsum(positive)[ends]
    return 1 + ends - tps, tps, scores[ends]


def pr_curve(positive: np.ndarray, scores: np.ndarray) -> PRCurve:
    """One-vs-rest PR curve; ``positive`` must hold at least one True."""
    fps, tps, thresholds = binary_clf_curve(positive.astype(np.int64), scores)
    precision = tps / (tps + fps)  # tps + fps ≥ 1 at every cut
    recall = tps / tps[-1]
    return PRCurve(np.r_[precision[::-1], 1.0], np.r_[recall[::-1], 0.0], thresholds[::-1].copy())


def average_precision(curve: PRCurve) -> float:
    """``Σ (R_n − R_{n−1}) P_n`` over the curve (no interpolation)."""
    return float(max(0.0, -np.sum(np.diff(curve.recall) * curve.precision[:-1])))


def class_curves(y: np.ndarray, probs: np.ndarray, classes: Sequence[str]) -> dict[str, PRCurve]:
    """PR curves of the classes present in ``y``."""
    return {name: pr_curve(y == k, probs[:, k]) for k, name in enumerate(classes) if (y == k).any()}


def by_class(classes: Sequence[str], values: np.ndarray) -> dict[str, float]:
    return {c: float(v) for c, v in zip(classes, values)}


def classification_report(y_true: np.ndarray, probs: np.ndarray,
                          classes: Sequence[str] = CLASSES) -> ClassificationReport:
    """Accuracy, balanced accuracy, macro F1, per-class scores, confusion matrix and PR curves.

    ``y_true``: N class indices into ``classes``; ``probs``: N×len(classes)
    scores (probabilities; rows need not sum to 1).  Conventions in the module docstring.
    """
    classes = tuple(classes)
    y, p = check_inputs(y_true, probs, len(classes))
    confusion = confusion_matrix(y, p.argmax(axis=1), len(classes))
    precision, recall, f1 = per_class_scores(confusion)
    support, predicted = confusion.sum(axis=1), confusion.sum(axis=0)
    curves = class_curves(y, p, classes)
    return ClassificationReport(
        classes=classes, n=len(y), accuracy=float(np.trace(confusion) / len(y)),
        balanced_accuracy=float(recall[support > 0].mean()), macro_f1=float(f1[(support + predicted) > 0].mean()),
        precision=by_class(classes, precision), recall=by_class(classes, recall), f1=by_class(classes, f1),
        support={c: int(s) for c, s in zip(classes, support)},
        average_precision={c: average_precision(curves[c]) if c in curves else math.nan for c in classes},
        confusion=confusion, curves=curves)


def comparison_table(reports: Mapping[str, ClassificationReport]) -> pd.DataFrame:
    """The paper's table: rows = models, columns accuracy, balanced_accuracy, macro_f1, ``F1 <class>``."""
    if not reports:
        raise ValueError("comparison_table needs at least one report")
    class_sets = {r.classes for r in reports.values()}
    if len(class_sets) > 1:
        raise ValueError(f"reports use different class lists: {sorted(class_sets)}")
    rows = {name: {"accuracy": r.accuracy, "balanced_accuracy": r.balanced_accuracy, "macro_f1": r.macro_f1,
                   **{f"F1 {c}": r.f1[c] for c in r.classes}} for name, r in reports.items()}
    table = pd.DataFrame.from_dict(rows, orient="index")
    table.index.name = "model"
    return table
