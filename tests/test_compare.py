"""Paired bootstrap of a metric difference over seeds, its batched metrics against scikit-learn, seed summaries."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from sklearn import metrics as skm

from skin_core.metrics.compare import paired_bootstrap, resampled_metric, summarize_seeds

METRICS = ["accuracy", "balanced_accuracy", "macro_f1"]


def right_on(y: np.ndarray, n_right: int, n_classes: int = 3) -> np.ndarray:
    """Predictions right on the first ``n_right`` images and wrong (the next class) on the rest."""
    pred = (y + 1) % n_classes
    pred[:n_right] = y[:n_right]
    return pred


def labels(seed: int, n: int, n_classes: int = 3) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, n_classes, size=n)


def sklearn_metric(metric: str, y: np.ndarray, pred: np.ndarray) -> float:
    """The oracle: scikit-learn with the classification report's conventions."""
    if metric == "accuracy":
        return skm.accuracy_score(y, pred)
    if metric == "balanced_accuracy":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # a predicted class absent from y_true
            return skm.balanced_accuracy_score(y, pred)
    return skm.f1_score(y, pred, average="macro", zero_division=0)


def test_b_right_on_d_more_images_gives_that_difference_inside_the_interval() -> None:
    n, extra = 200, [10, 14, 6]  # b is right on 120 + d images where a is right on 120
    runs = []
    for seed, d in enumerate(extra):
        y = labels(seed, n)
        runs.append((y, right_on(y, 120), right_on(y, 120 + d)))
    # a given as one-hot scores in the first seed: its argmax is the same prediction.
    runs[0] = (runs[0][0], np.eye(3)[runs[0][1]], runs[0][2])
    result = paired_bootstrap(runs, "accuracy", n_boot=500, seed=1)
    assert result.per_seed == pytest.approx([10 / n, 14 / n, 6 / n], abs=1e-12)
    assert result.observed == pytest.approx(10 / n, abs=1e-12)
    assert result.low < result.observed < result.high
    assert (result.metric, result.n_boot, result.confidence) == ("accuracy", 500, 0.95)


@pytest.mark.parametrize("metric", METRICS)
def test_thirty_points_better_on_500_images_excludes_zero(metric: str) -> None:
    runs = [(y, right_on(y, 200), right_on(y, 350)) for y in (labels(s, 500) for s in range(3))]
    result = paired_bootstrap(runs, metric, n_boot=1000)
    assert result.excludes_zero and result.low > 0.2
    if metric == "accuracy":
        assert result.observed == pytest.approx(0.3, abs=1e-12)


@pytest.mark.parametrize("metric", METRICS)
def test_identical_models_give_exactly_zero(metric: str) -> None:
    predictions = [labels(10 + s, 300) for s in range(3)]
    runs = [(labels(s, 300), a, a.copy()) for s, a in enumerate(predictions)]
    result = paired_bootstrap(runs, metric, n_boot=300)
    # Any unpaired resampling of a and b would spread the replicates around 0.
    assert (result.low, result.high, result.observed) == (0.0, 0.0, 0.0)
    assert not result.excludes_zero


@pytest.mark.parametrize("metric", METRICS)
@pytest.mark.parametrize("case", range(3))
def test_resampled_metric_equals_sklearn_on_each_resample(metric: str, case: int) -> None:
    rng = np.random.default_rng(case)
    n, k = 30, 5  # few images over 5 classes: resamples often miss a class, in y_true or predicted
    y = rng.integers(0, k - 1, size=n)  # class 4 never true, sometimes predicted
    pred = np.where(rng.random(n) < 0.5, y, rng.integers(0, k, size=n))
    draws = rng.integers(0, n, size=(20, n))
    counts = np.stack([np.bincount(d, minlength=n) for d in draws])
    expected = [sklearn_metric(metric, y[d], pred[d]) for d in draws]
    np.testing.assert_allclose(resampled_metric(y, pred, counts, metric), expected, rtol=0, atol=1e-12)


def test_per_seed_differences_follow_sklearn_when_b_predicts_a_class_absent_from_y() -> None:
    y = np.array([0, 0, 1, 1, 2, 2])
    a = np.array([0, 1, 1, 1, 2, 0])
    b = np.array([0, 0, 1, 3, 2, 2])  # class 3 predicted, never true: a 0 in b's macro F1
    result = paired_bootstrap([(y, a, b)], "macro_f1", n_boot=50)
    assert result.per_seed[0] == pytest.approx(sklearn_metric("macro_f1", y, b) - sklearn_metric("macro_f1", y, a))


def test_same_seed_same_interval() -> None:
    runs = [(y, right_on(y, 100), right_on(y, 110)) for y in (labels(s, 200) for s in range(2))]
    first = paired_bootstrap(runs, "balanced_accuracy", n_boot=400, seed=7)
    assert paired_bootstrap(runs, "balanced_accuracy", n_boot=400, seed=7) == first
    other = paired_bootstrap(runs, "balanced_accuracy", n_boot=400, seed=8)
    assert (other.low, other.high) != (first.low, first.high)


def test_summarize_seeds_by_hand() -> None:
    table = summarize_seeds({"baseline": [0.5, 0.7, 0.6], "AT layer4": [0.8]})
    # baseline: mean 0.6, deviations −0.1, 0.1, 0 → variance 0.02 / (3 − 1) = 0.01 → std 0.1.
    assert table.loc["baseline"].tolist() == pytest.approx([0.6, 0.1, 3])
    assert table.loc["AT layer4", "mean"] == 0.8 and math.isnan(table.loc["AT layer4", "std"])
    assert table.loc["AT layer4", "n"] == 1


def _y() -> np.ndarray:
    return np.array([0, 1, 2, 1])


@pytest.mark.parametrize("runs, kwargs, message", [
    ([], {}, "runs is empty"),
    ([(_y(), _y()[:3], _y())], {}, r"runs\[0\].*predictions must be 4"),
    ([(_y(), _y(), np.full((4, 2), 0.5))], {}, r"runs\[0\].*labels must lie"),
    ([(_y(), _y(), np.full((3, 3), 0.5))], {}, r"runs\[0\].*probs must be"),
    ([(_y(), _y(), _y()), (_y(), _y())], {}, r"runs\[1\] must be"),
    ([(_y().astype(float), _y(), _y())], {}, "y_true must be"),
    ([(_y(), _y(), _y())], {"metric": "auc"}, "metric must be"),
    ([(_y(), _y(), _y())], {"n_boot": 0}, "n_boot"),
    ([(_y(), _y(), _y())], {"confidence": 1.0}, "confidence"),
])
def test_bad_input_is_refused(runs: list, kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        paired_bootstrap(runs, **{"metric": "accuracy", **kwargs})


def test_summarize_seeds_refuses_empty_input() -> None:
    with pytest.raises(ValueError, match="empty"):
        summarize_seeds({})
    with pytest.raises(ValueError, match="no seeds"):
        summarize_seeds({"baseline": []})
