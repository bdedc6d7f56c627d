"""Is a variant better than the baseline? The paired bootstrap of a metric difference over seeds.

For seeds s = 1..S, model a (baseline) and model b (the variant) are scored on
the same test images; the statistic is the mean over seeds of
``metric(b) − metric(a)``.  Each bootstrap replicate resamples the images of
every seed with replacement, independently per seed but with the same indices
for a and b (paired: the image-to-image variation both models share cancels),
recomputes the per-seed differences and averages them.  The interval is the
percentile interval of the replicates, ``[q_{α/2}, q_{1−α/2}]`` with
``α = 1 − confidence`` (Efron & Tibshirani, *An Introduction to the
Bootstrap*, 1993, §13.3; paired resampling of a test set as in Koehn,
"Statistical Significance Tests for Machine Translation Evaluation", EMNLP 2004).

The metrics follow the classification report's conventions
(``skin_core.metrics.classification``): accuracy; balanced accuracy = mean
recall over the classes present in the (resampled) ``y_true``; macro F1 = mean
F1 over the classes present in ``y_true`` or predicted.  The observed values
come from scikit-learn; the replicates are computed in batches from per-class
counts (``resampled_metric``), which equal scikit-learn's on the resampled sets.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from skin_core.metrics.classification import SCALAR_METRICS, check_inputs

logger = logging.getLogger(__name__)

# Replicates per batch are sized so one batch's N-wide count matrix stays near 2²² entries (32 MB).
_BATCH_ENTRIES = 1 << 22


@dataclass(frozen=True)
class PairedDifference:
    """Mean over seeds of ``metric(b) − metric(a)`` with its percentile bootstrap interval."""

    metric: str
    observed: float
    per_seed: tuple[float, ...]
    low: float
    high: float
    n_boot: int
    confidence: float

    @property
    def excludes_zero(self) -> bool:
        """True when the whole interval lies on one side of 0 (a difference at this confidence)."""
        return self.low > 0 or self.high < 0


def _predictions(y: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """Class indices from N predictions or from an N×K score matrix (argmax, ties to the first class)."""
    s = np.asarray(scores)
    if s.ndim == 2:
        return check_inputs(y, s, s.shape[1])[1].argmax(axis=1)
    if s.shape != y.shape or s.dtype.kind not in "iu":
        raise ValueError(f"predictions must be {len(y)} integer labels or a {len(y)}×K score matrix, "
                         f"got shape {s.shape} dtype {s.dtype}")
    if s.min() < 0:
        raise ValueError("predicted labels must be ≥ 0")
    return s.astype(np.int64)


def _check_run(run: Sequence[np.ndarray], i: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(y_true, predictions of a, predictions of b) of ``runs[i]``; ValueError naming the run otherwise."""
    if len(run) != 3:
        raise ValueError(f"runs[{i}] must be (y_true, a, b), got {len(run)} items")
    y = np.asarray(run[0])
    try:
        if y.ndim != 1 or y.size == 0 or y.dtype.kind not in "iu" or y.min() < 0:
            raise ValueError(f"y_true must be a non-empty 1-D array of labels ≥ 0, got shape {y.shape} "
                             f"dtype {y.dtype}")
        return y.astype(np.int64), _predictions(y, run[1]), _predictions(y, run[2])
    except ValueError as err:
        raise ValueError(f"runs[{i}]: {err}") from err


def _check_metric(metric: str) -> None:
    if metric not in SCALAR_METRICS:
        raise ValueError(f"metric must be one of {sorted(SCALAR_METRICS)}, got {metric!r}")


def _check_options(metric: str, n_boot: int, confidence: float) -> None:
    _check_metric(metric)
    if n_boot < 1:
        raise ValueError(f"n_boot must be ≥ 1, got {n_boot}")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must lie in (0, 1), got {confidence}")


def _mean_where(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """Row means of ``num / den`` over the columns where ``den > 0``."""
    present = den > 0
    ratio = np.divide(num, den, out=np.zeros_like(num), where=present)
    return ratio.sum(axis=1) / present.sum(axis=1)


def resampled_metric(y_true: np.ndarray, y_pred: np.ndarray, counts: np.ndarray, metric: str) -> np.ndarray:
    """``metric`` on each resampled test set, where ``counts[r, i]`` = copies of image i in replicate r.

    ``y_true``, ``y_pred``: N labels ≥ 0; ``counts``: R×N non-negative integers
    with positive row sums.  From per-class counts T_k (true), P_k (predicted)
    and TP_k, each ``counts @ one-hot``: accuracy = Σ TP_k / n; balanced
    accuracy = mean over T_k > 0 of TP_k / T_k; macro F1 = mean over
    T_k + P_k > 0 of 2·TP_k / (T_k + P_k), with n = Σ_i counts[r, i].
    """
    _check_metric(metric)
    if y_true.shape != y_pred.shape or counts.ndim != 2 or counts.shape[1] != len(y_true):
        raise ValueError(f"y_true, y_pred must hold N labels and counts be R×N, got shapes "
                         f"{y_true.shape}, {y_pred.shape}, {counts.shape}")
    n_classes = int(max(y_true.max(), y_pred.max())) + 1
    true_1h = np.eye(n_classes)[y_true]
    w = counts.astype(np.float64)  # integer sums stay exact in float64; the matmul runs on BLAS
    tp = w @ (true_1h * (y_true == y_pred)[:, None])
    if metric == "accuracy":
        return tp.sum(axis=1) / w.sum(axis=1)
    true = w @ true_1h
    if metric == "balanced_accuracy":
        return _mean_where(tp, true)
    return _mean_where(2 * tp, true + w @ np.eye(n_classes)[y_pred])


def _resample_counts(rng: np.random.Generator, n_rep: int, n: int) -> np.ndarray:
    """``n_rep``×``n`` copies per image of ``n_rep`` draws of n images with replacement."""
    draws = rng.integers(0, n, size=(n_rep, n)) + n * np.arange(n_rep)[:, None]
    return np.bincount(draws.ravel(), minlength=n_rep * n).reshape(n_rep, n)


def _replicate_differences(runs: list[tuple[np.ndarray, np.ndarray, np.ndarray]], metric: str,
                           n_boot: int, seed: int) -> np.ndarray:
    """The ``n_boot`` bootstrap replicates of the mean over seeds of metric(b) − metric(a)."""
    rng = np.random.default_rng(seed)
    batch = max(1, _BATCH_ENTRIES // max(len(y) for y, _, _ in runs))
    out = []
    for start in range(0, n_boot, batch):
        n_rep = min(batch, n_boot - start)
        diff = np.zeros(n_rep)
        for y, a, b in runs:
            counts = _resample_counts(rng, n_rep, len(y))  # one draw serves a and b: paired
            diff += resampled_metric(y, b, counts, metric) - resampled_metric(y, a, counts, metric)
        out.append(diff / len(runs))
    return np.concatenate(out)


def paired_bootstrap(runs: Sequence[Sequence[np.ndarray]], metric: str, n_boot: int = 2000, seed: int = 0,
                     confidence: float = 0.95) -> PairedDifference:
    """Mean over seeds of ``metric(b) − metric(a)`` and its paired percentile bootstrap interval.

    ``runs``: one ``(y_true, a, b)`` per seed, ``a`` and ``b`` on the same
    images as ``y_true``, each either N integer predictions or an N×K score
    matrix (argmax taken).  ``metric``: accuracy, balanced_accuracy or macro_f1.
    ``seed`` fixes the resampling: the same inputs and seed give the same interval.
    """
    _check_options(metric, n_boot, confidence)
    if len(runs) == 0:
        raise ValueError("runs is empty: give one (y_true, a, b) per seed")
    checked = [_check_run(run, i) for i, run in enumerate(runs)]
    score = SCALAR_METRICS[metric]
    per_seed = tuple(score(y, b) - score(y, a) for y, a, b in checked)
    replicates = _replicate_differences(checked, metric, n_boot, seed)
    alpha = 1 - confidence
    low, high = np.quantile(replicates, [alpha / 2, 1 - alpha / 2])
    result = PairedDifference(metric=metric, observed=float(np.mean(per_seed)), per_seed=per_seed,
                              low=float(low), high=float(high), n_boot=n_boot, confidence=confidence)
    logger.info("paired bootstrap %s: %+.4f [%+.4f, %+.4f] over %d seeds", metric, result.observed,
                result.low, result.high, len(checked))
    return result


def summarize_seeds(values: Mapping[str, Sequence[float]]) -> pd.DataFrame:
    """Per key (e.g. model): mean, sample std (ddof = 1; NaN for one seed) and n of its per-seed values."""
    if not values:
        raise ValueError("values is empty: give at least one key with its per-seed values")
    empty = [key for key, v in values.items() if len(v) == 0]
    if empty:
        raise ValueError(f"values has no seeds for {empty}")
    rows = {key: {"mean": float(np.mean(v)), "std": float(pd.Series(v, dtype=float).std(ddof=1)), "n": len(v)}
            for key, v in values.items()}
    frame = pd.DataFrame.from_dict(rows, orient="index")
    frame.index.name = "name"
    return frame
