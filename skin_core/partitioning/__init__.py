"""Data partitions driven by the metric teacher's clusters."""

from skin_core.partitioning.clusters import (
    SPLITS,
    Partition,
    PartitionError,
    partition_by_clusters,
    partition_summary,
)

__all__ = ["SPLITS", "Partition", "PartitionError", "partition_by_clusters", "partition_summary"]
