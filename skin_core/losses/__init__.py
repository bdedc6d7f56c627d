"""Metric-learning criteria for the teacher."""

from skin_core.losses.multi_similarity import MultiSimilarityCriterion, pair_stats

__all__ = ["MultiSimilarityCriterion", "pair_stats"]
