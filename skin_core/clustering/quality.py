"""How well clusters follow known labels: purity (NMI is ``skin_core.clustering.kmeans.cluster_nmi``).

Purity = Σ_clusters max_label |cluster ∩ label| / N: the accuracy of labelling
every point with its cluster's majority label.  It is 1 for clusters that each
hold one label and rises towards 1 as clusters get smaller (N singleton
clusters score 1), so read it next to the number of clusters or the NMI.
Reference: Manning, Raghavan & Schütze, *Introduction to Information
Retrieval*, §16.3.
"""

from __future__ import annotations

import numpy as np
from sklearn.metrics.cluster import contingency_matrix


def cluster_purity(clusters: np.ndarray, labels: np.ndarray) -> float:
    """Purity of the partition ``clusters`` against ``labels`` (two equal-length 1-D labelings)."""
    clusters, labels = np.asarray(clusters), np.asarray(labels)
    if clusters.ndim != 1 or clusters.shape != labels.shape or clusters.size == 0:
        raise ValueError(f"clusters and labels must be non-empty 1-D arrays of equal length, "
                         f"got shapes {clusters.shape} and {labels.shape}")
    counts = contingency_matrix(labels, clusters)  # rows labels, columns clusters
    return float(counts.max(axis=0).sum() / clusters.size)
