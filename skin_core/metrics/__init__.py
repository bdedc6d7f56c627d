"""Evaluation metrics: the paper's classification figures, k-NN scores of features, paired model comparison."""

from skin_core.metrics.classification import (ClassificationReport, PRCurve, classification_report,
                                               comparison_table)
from skin_core.metrics.compare import PairedDifference, paired_bootstrap, summarize_seeds
from skin_core.metrics.knn import KnnScores, knn_predict, knn_scores

__all__ = ["ClassificationReport", "KnnScores", "PRCurve", "PairedDifference", "classification_report",
           "comparison_table", "knn_predict", "knn_scores", "paired_bootstrap", "summarize_seeds"]
