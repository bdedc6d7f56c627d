"""Evaluation metrics: the paper's classification figures computed from class probabilities."""

from skin_core.metrics.classification import (ClassificationReport, PRCurve, classification_report,
                                               comparison_table)

__all__ = ["ClassificationReport", "PRCurve", "classification_report", "comparison_table"]
