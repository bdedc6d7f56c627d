"""The cluster-aware partition as a pipeline stage: teacher assignments in, published split table out.

A separate stage from the teacher so that changing ``partition.*`` re-splits in
seconds without retraining; it needs no Ray.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import pandas as pd

from raytasks.stages import Stage, StageContext, StageOutput
from raytasks.teacher import ASSIGNMENTS, TeacherSummary
from skin_core.config import PartitionConfig, flatten, to_dict
from skin_core.partitioning.clusters import partition_with

logger = logging.getLogger(__name__)

SPLITS_FILE, SUMMARY_FILE = "partition.csv", "partition_summary.csv"


@dataclass(frozen=True)
class PartitionSummary:
    """Images per split, the clusters held out as test and the share of the images they took."""

    train: int
    val: int
    test: int
    test_clusters: tuple[int, ...]
    test_share: float = float("nan")  # test / all partitioned images
    holdout: int = 0  # the ranking hold-out reserved before the cluster split (sweeps only)


def partition_stage(teacher: StageOutput[TeacherSummary], config: PartitionConfig) -> Stage[PartitionSummary]:
    """Split the teacher's clustered images into train / val / test (whole clusters held out)."""

    def write(context: StageContext) -> PartitionSummary:
        partition = partition_with(teacher.read_csv(ASSIGNMENTS), config)
        context.write_csv(SPLITS_FILE, partition.assignment)
        context.write_csv(SUMMARY_FILE, partition.summary(), index=True)
        counts = partition.assignment["split"].value_counts()
        summary = PartitionSummary(*(int(counts.get(s, 0)) for s in ("train", "val", "test")),
                                   test_clusters=tuple(int(c) for c in partition.test_clusters),
                                   test_share=round(float(counts.get("test", 0) / counts.sum()), 4),
                                   holdout=int(counts.get("holdout", 0)))
        logger.info("partition: %s", summary)
        return summary

    return Stage("partition", {"teacher": teacher.key, "partition": to_dict(config)}, PartitionSummary, write,
                 params=flatten({"partition": to_dict(config)}))


def splits(partition: StageOutput[PartitionSummary]) -> pd.DataFrame:
    """The per-image table: image_id, lesion_id, label, origin, cluster, split, test_set."""
    return partition.read_csv(SPLITS_FILE)


def summary_table(partition: StageOutput[PartitionSummary]) -> pd.DataFrame:
    return partition.read_csv(SUMMARY_FILE, index_col=[0, 1])


def format_partition(result: StageOutput[PartitionSummary]) -> str:
    s = result.summary
    holdout = f" · ranking hold-out {s.holdout:,}" if s.holdout else ""
    return (f"partition        train {s.train:,} · val {s.val:,} · test {s.test:,}{holdout} ({s.test_share:.1%}; "
            f"held-out clusters {list(s.test_clusters)})\n{summary_table(result).to_string()}")
