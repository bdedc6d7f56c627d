"""Sample uniformly over pseudo-labels, so one huge cluster cannot dominate an epoch.

DeepCluster's k-means on skin-lesion features gives very unequal clusters
(nevi dominate ISIC); drawing the same number of images from every cluster
keeps the metric loss from collapsing onto the big ones.
"""

from __future__ import annotations

import math
from typing import Iterator

import numpy as np
from torch.utils.data import Sampler


class UniformClusterSampler(Sampler[int]):
    """Dataset indices drawn equally from every non-empty cluster, shuffled, split across ranks.

    Every rank builds the same epoch from ``(seed, epoch)`` and takes every
    ``world_size``-th index from position ``rank``, so slices are disjoint and of
    equal length (the epoch is padded up to a multiple of ``world_size``).
    Clusters smaller than their share are drawn with replacement.  Call
    ``set_epoch`` before each epoch for a new order.
    """

    def __init__(self, assignments: np.ndarray, num_samples: int | None = None, *,
                 seed: int = 0, rank: int = 0, world_size: int = 1) -> None:
        labels = np.asarray(assignments)
        if labels.ndim != 1 or labels.size == 0 or not np.issubdtype(labels.dtype, np.integer):
            raise ValueError(f"assignments must be a non-empty 1-D integer array, got {labels.dtype} {labels.shape}")
        if labels.min() < 0:
            raise ValueError("assignments must be non-negative cluster ids")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank must be in [0, world_size), got rank={rank}, world_size={world_size}")
        num_samples = labels.size if num_samples is None else num_samples
        if num_samples < 1:
            raise ValueError(f"num_samples must be ≥ 1, got {num_samples}")
        self.members = [np.flatnonzero(labels == c) for c in np.unique(labels)]
        self.seed, self.rank, self.world_size, self.epoch = seed, rank, world_size, 0
        self.per_rank = math.ceil(num_samples / world_size)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def epoch_indices(self) -> np.ndarray:
        """This epoch's indices for all ranks together (identical on every rank)."""
        rng = np.random.default_rng([self.seed, self.epoch])
        total = self.per_rank * self.world_size
        per_cluster = math.ceil(total / len(self.members))
        draws = [rng.choice(m, per_cluster, replace=m.size < per_cluster) for m in self.members]
        # Trimming after the shuffle drops a random few, so clusters stay balanced.
        return rng.permutation(np.concatenate(draws))[:total]

    def __iter__(self) -> Iterator[int]:
        return iter(self.epoch_indices()[self.rank::self.world_size].tolist())

    def __len__(self) -> int:
        return self.per_rank
