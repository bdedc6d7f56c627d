"""Classification figures of the paper's tables and PR curves, from labels and class probabilities.

The figures come from scikit-learn; these are the conventions the report fixes
on top of it:

* prediction = ``argmax`` of the probabilities (ties go to the first class in
  ``CLASSES`` order);
* per-class precision, recall and F1 over every class in ``classes``
  (``precision_recall_fscore_support`` with ``zero_division = 0``); F1 is
  ``2·TP / (2·TP + FP + FN)``;
* balanced accuracy = mean recall over the classes present in ``y_true``
  (``balanced_accuracy_score``);
* macro F1 = mean F1 over the classes present in ``y_true`` or predicted
  (``f1_score(average="macro")`` without ``labels``), so a class absent from a
  test set and never predicted does not count as a 0;
* PR curves are one-vs-rest on ``probs[:, k]`` over every distinct score
  (``precision_recall_curve``); average precision is the step-function sum
  ``Σ (R_n − R_{n−1}) P_n`` (``average_precision_score``).  For a class absent
  from ``y_true`` recall is undefined: its AP is NaN and it has no curve.
"""

from __future__ import annotations

import logging
import math
import warnings
from dataclasses import dataclass, field
from typing import Callable, Mapping, Sequence

import numpy as np
import pandas as pd
from sklearn import metrics as skm

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


def accuracy(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Fraction of correct predictions (``accuracy_score``)."""
    return float(skm.accuracy_score(y_true, y_pred))


def balanced_accuracy(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Mean recall over the classes present in ``y_true`` (``balanced_accuracy_score``)."""
    with warnings.catch_warnings():
        # Predicting a class absent from y_true is expected on small test sets; leaving it
        # out of the mean is this report's convention, not something to warn about.
        warnings.filterwarnings("ignore", message="y_pred contains classes not in y_true")
        return float(skm.balanced_accuracy_score(y_true, y_pred))


def macro_f1(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Mean F1 over the classes present in ``y_true`` or ``y_pred`` (``f1_score(average="macro")``)."""
    return float(skm.f1_score(y_true, y_pred, average="macro", zero_division=0))


# The report's scalar figures by name, shared with the paired comparison of two models.
SCALAR_METRICS: dict[str, Callable[[np.ndarray, np.ndarray], float]] = {
    "accuracy": accuracy, "balanced_accuracy": balanced_accuracy, "macro_f1": macro_f1}


def class_curves(y: np.ndarray, probs: np.ndarray, classes: Sequence[str]) -> dict[str, PRCurve]:
    """One-vs-rest PR curves of the classes present in ``y``."""
    return {name: PRCurve(*skm.precision_recall_curve(y == k, probs[:, k]))
            for k, name in enumerate(classes) if (y == k).any()}


def class_average_precision(y: np.ndarray, probs: np.ndarray, classes: Sequence[str]) -> dict[str, float]:
    """One-vs-rest average precision per class; NaN for a class absent from ``y``."""
    return {name: float(skm.average_precision_score(y == k, probs[:, k])) if (y == k).any() else math.nan
            for k, name in enumerate(classes)}


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
    pred = p.argmax(axis=1)
    labels = np.arange(len(classes))
    precision, recall, f1, support = skm.precision_recall_fscore_support(y, pred, labels=labels, zero_division=0)
    return ClassificationReport(
        classes=classes, n=len(y), accuracy=accuracy(y, pred), balanced_accuracy=balanced_accuracy(y, pred),
        macro_f1=macro_f1(y, pred), precision=by_class(classes, precision), recall=by_class(classes, recall),
        f1=by_class(classes, f1), support={c: int(s) for c, s in zip(classes, support)},
        average_precision=class_average_precision(y, p, classes),
        confusion=skm.confusion_matrix(y, pred, labels=labels).astype(np.int64), curves=class_curves(y, p, classes))


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
