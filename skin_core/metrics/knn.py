"""Majority-vote k-nearest-neighbour evaluation of frozen features: the standard test of a self-supervised teacher.

Each evaluation point takes the majority label of its ``k`` nearest training
points under cosine similarity ``cos(u, v) = u·v / (‖u‖ ‖v‖)`` (features are
compared by direction only, as after L2-normalising the rows).  A tie between
labels with the same number of votes goes to the label whose neighbours have
the larger summed cosine similarity; an exact tie on that sum too goes to the
smallest label.  Among training points at exactly the same distance, which
enter the k nearest is scikit-learn's choice.

Reference: the k-NN protocol of Wu et al., "Unsupervised Feature Learning via
Non-Parametric Instance Discrimination", CVPR 2018, with plain (unweighted)
votes in place of their exp(cos/τ) weights.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
from sklearn.neighbors import NearestNeighbors

from skin_core.metrics.classification import accuracy, balanced_accuracy

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class KnnScores:
    """k-NN classification of ``n_eval`` points by ``n_train`` labelled ones (``k`` after capping)."""

    accuracy: float
    balanced_accuracy: float  # mean recall over the labels present in the eval set
    k: int
    n_train: int
    n_eval: int


def _check_matrix(features: np.ndarray, name: str) -> np.ndarray:
    """A finite non-empty N×D float matrix; ValueError naming ``name`` otherwise."""
    x = np.asarray(features, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] == 0 or x.shape[1] == 0:
        raise ValueError(f"{name} must be a non-empty N×D matrix, got shape {x.shape}")
    if not np.isfinite(x).all():
        raise ValueError(f"{name} contain NaN or inf")
    return x


def _check_labels(labels: np.ndarray, n: int, name: str) -> np.ndarray:
    y = np.asarray(labels)
    if y.shape != (n,):
        raise ValueError(f"{name} must be 1-D with one label per feature row ({n}), got shape {y.shape}")
    return y


def _vote(neighbour_labels: np.ndarray, similarities: np.ndarray, n_labels: int) -> np.ndarray:
    """Per row, the most frequent label; ties to the larger summed similarity, then the smaller label."""
    rows = np.repeat(np.arange(len(neighbour_labels)), neighbour_labels.shape[1])
    flat = rows * n_labels + neighbour_labels.ravel()
    size = len(neighbour_labels) * n_labels
    counts = np.bincount(flat, minlength=size).reshape(-1, n_labels)
    sums = np.bincount(flat, weights=similarities.ravel(), minlength=size).reshape(-1, n_labels)
    tied = counts == counts.max(axis=1, keepdims=True)
    return np.where(tied, sums, -np.inf).argmax(axis=1)  # argmax keeps the first (smallest) label


def knn_predict(train_features: np.ndarray, train_labels: np.ndarray, eval_features: np.ndarray,
                k: int = 20) -> np.ndarray:
    """The k-NN label of each row of ``eval_features`` (rules in the module docstring).

    ``k`` is capped at the number of training points, with a warning.
    """
    train_x = _check_matrix(train_features, "train_features")
    train_y = _check_labels(train_labels, len(train_x), "train_labels")
    eval_x = _check_matrix(eval_features, "eval_features")
    if eval_x.shape[1] != train_x.shape[1]:
        raise ValueError(f"eval_features must have {train_x.shape[1]} columns like train_features, "
                         f"got shape {eval_x.shape}")
    k = _capped_k(k, len(train_x))
    # Brute-force cosine distance 1 − cos(u, v), the exact neighbours.
    distances, index = NearestNeighbors(n_neighbors=k, metric="cosine").fit(train_x).kneighbors(eval_x)
    label_values, train_codes = np.unique(train_y, return_inverse=True)
    return label_values[_vote(train_codes[index], 1.0 - distances, len(label_values))]


def _capped_k(k: int, n_train: int) -> int:
    if k < 1:
        raise ValueError(f"k must be ≥ 1, got {k}")
    if k > n_train:
        logger.warning("k-NN: k=%d capped to the %d training points", k, n_train)
    return min(k, n_train)


def knn_scores(train_features: np.ndarray, train_labels: np.ndarray, eval_features: np.ndarray,
               eval_labels: np.ndarray, k: int = 20) -> KnnScores:
    """Accuracy and balanced accuracy of the k-NN labels of ``eval_features`` against ``eval_labels``."""
    predicted = knn_predict(train_features, train_labels, eval_features, k)
    eval_y = _check_labels(eval_labels, len(predicted), "eval_labels")
    n_train = len(train_features)
    return KnnScores(accuracy=accuracy(eval_y, predicted), balanced_accuracy=balanced_accuracy(eval_y, predicted),
                     k=min(k, n_train), n_train=n_train, n_eval=len(eval_y))
