"""Metric-learning criteria for the teacher."""

from skin_core.losses.multi_similarity import MultiSimilarityCriterion, pair_stats
from skin_core.losses.attention_transfer import AttentionTransferLoss, StudentObjective, attention_map

__all__ = ["MultiSimilarityCriterion", "pair_stats", "AttentionTransferLoss", "StudentObjective", "attention_map"]
