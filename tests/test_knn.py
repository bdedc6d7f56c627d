"""k-NN evaluation of features and cluster purity, against hand computations."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from skin_core.clustering import cluster_purity
from skin_core.metrics.knn import KnnScores, knn_predict, knn_scores


def at(degrees: list[float], radii: list[float]) -> np.ndarray:
    """2-D points at the given angles and lengths: their cosine similarity is cos(angle gap)."""
    theta = np.radians(degrees)
    return np.c_[np.cos(theta), np.sin(theta)] * np.asarray(radii, dtype=float)[:, None]


# Train points A..H (angle°, length, label); lengths differ so only direction may matter.
TRAIN = at([0, 20, 40, 90, 110, 130, 65, 200], [3, 1, 0.5, 2, 1, 4, 1, 2])
TRAIN_Y = np.array([0, 0, 0, 1, 1, 1, 2, 2])  # A B C | D E F | G H
EVAL = at([10, 70, 100, 77, 190, 30], [2, 1, 5, 1, 0.3, 2])
EVAL_Y = np.array([0, 2, 1, 2, 2, 1])
# k = 3, neighbours by angle gap (the 4th nearest after "|" shows the margin):
# q1 10°:  A 10, B 10, C 30 | G 55    → 0,0,0            → 0  (true 0, right)
# q2 70°:  G 5,  D 20, C 30 | E 40    → 2,1,0: a 1-1-1 tie; summed cosines
#          cos5°=.996 (label 2) > cos20°=.940 (1) > cos30°=.866 (0) → 2  (true 2, right)
# q3 100°: D 10, E 10, F 30 | G 35    → 1,1,1            → 1  (true 1, right)
# q4 77°:  G 12, D 13, E 33 | C 37    → 2,1,1: two votes beat the nearest → 1  (true 2, wrong)
# q5 190°: H 10, F 60, E 80 | D 100   → 2,1,1            → 1  (true 2, wrong)
# q6 30°:  B 10, C 10, A 30 | G 35    → 0,0,0            → 0  (true 1, wrong)
HAND_PREDICTIONS = [0, 2, 1, 1, 1, 0]


def test_hand_worked_votes_and_scores() -> None:
    np.testing.assert_array_equal(knn_predict(TRAIN, TRAIN_Y, EVAL, k=3), HAND_PREDICTIONS)
    scores = knn_scores(TRAIN, TRAIN_Y, EVAL, EVAL_Y, k=3)
    # Right on q1, q2, q3 of 6.  Recall: label 0 1/1 (q1), label 1 1/2 (q3 of q3, q6),
    # label 2 1/3 (q2 of q2, q4, q5).
    assert scores == KnnScores(accuracy=pytest.approx(3 / 6), balanced_accuracy=pytest.approx((1 + 1 / 2 + 1 / 3) / 3),
                               k=3, n_train=8, n_eval=6)


def test_a_count_tie_goes_to_the_larger_summed_similarity_not_the_nearest() -> None:
    train = at([1, 60, 10, 12, 180], [1, 1, 1, 1, 1])
    labels = np.array(["X", "X", "Y", "Y", "Z"])
    # Query at 0°, k = 4: X at gaps 1° and 60°, Y at 10° and 12° (Z at 180° is 5th): 2 votes each.
    # Sums: X cos1° + cos60° = 0.9998 + 0.5 = 1.4998; Y cos10° + cos12° = 0.9848 + 0.9781 = 1.9630 → Y,
    # although X holds the single nearest point.
    assert knn_predict(train, labels, at([0], [1]), k=4).tolist() == ["Y"]


def test_k_is_capped_at_the_training_set_with_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="skin_core.metrics.knn"):
        capped = knn_scores(TRAIN[:3], TRAIN_Y[:3], EVAL, EVAL_Y, k=20)
    assert "capped" in caplog.text
    assert capped.k == 3 and capped.n_train == 3
    # All three training points are label 0: every eval point is called 0; right only on q1.
    assert capped.accuracy == pytest.approx(1 / 6)


@pytest.mark.parametrize("args, message", [
    ((TRAIN[:, 0], TRAIN_Y, EVAL, EVAL_Y), "train_features"),
    ((TRAIN, TRAIN_Y[:-1], EVAL, EVAL_Y), "train_labels"),
    ((TRAIN, TRAIN_Y, EVAL[:, :1], EVAL_Y), "eval_features"),
    ((TRAIN, TRAIN_Y, EVAL, EVAL_Y[:-1]), "eval_labels"),
    ((np.full_like(TRAIN, np.nan), TRAIN_Y, EVAL, EVAL_Y), "NaN"),
    ((TRAIN, TRAIN_Y, EVAL[:0], EVAL_Y[:0]), "eval_features"),
])
def test_bad_shapes_are_refused(args: tuple, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        knn_scores(*args, k=3)


def test_k_below_one_is_refused() -> None:
    with pytest.raises(ValueError, match="k must be"):
        knn_scores(TRAIN, TRAIN_Y, EVAL, EVAL_Y, k=0)


def test_purity_by_hand() -> None:
    clusters = np.array([0, 0, 0, 1, 1, 2, 2, 2, 2])
    labels = np.array(["a", "a", "b", "b", "b", "a", "c", "c", "c"])
    # Cluster 0: a a b → 2; cluster 1: b b → 2; cluster 2: a c c c → 3.  (2 + 2 + 3) / 9.
    assert cluster_purity(clusters, labels) == pytest.approx(7 / 9)
    # One cluster: the majority label's share (a: 3 of 9); singletons: every point its own majority.
    assert cluster_purity(np.zeros(9, dtype=int), labels) == pytest.approx(3 / 9)
    assert cluster_purity(np.arange(9), labels) == 1.0


def test_purity_refuses_mismatched_labelings() -> None:
    with pytest.raises(ValueError, match="equal length"):
        cluster_purity(np.array([0, 1, 1]), np.array([0, 1]))
    with pytest.raises(ValueError, match="equal length"):
        cluster_purity(np.array([], dtype=int), np.array([], dtype=int))
