"""The cluster-aware partition as a pipeline stage: teacher assignments in, published split table out.

A separate stage from the teacher so that changing ``partition.*`` re-splits in
seconds without retraining; it needs no Ray.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import pandas as pd

from skin_core import storage
from skin_core.config import PartitionConfig, config_hash, to_dict
from skin_core.partitioning.clusters import partition_by_clusters
from skin_core.publish import Publication, publish, require_publication, reusable, start_run

logger = logging.getLogger(__name__)

SPLITS_FILE, SUMMARY_FILE = "partition.csv", "partition_summary.csv"


@dataclass(frozen=True)
class PartitionResult:
    publication: Publication
    reused: bool

    def table(self) -> pd.DataFrame:
        (uri,) = self.publication.uris(SPLITS_FILE)
        return storage.read_csv(uri)


def run_partition(teacher: str, out: str, config: PartitionConfig) -> PartitionResult:
    """Split the teacher's clustered images into train / val / test (whole clusters held out)."""
    teacher, out = storage.absolute(teacher), storage.absolute(out)
    source = require_publication(teacher)
    key = config_hash({"teacher": source.config_hash, "partition": to_dict(config)})
    if (existing := reusable(out, key)) is not None:
        return PartitionResult(existing, reused=True)
    (assignments_uri,) = source.uris("assignments.csv")
    frame = storage.read_csv(assignments_uri)
    partition = partition_by_clusters(frame, test_clusters=config.test_clusters,
                                      val_fraction=config.val_fraction, seed=config.seed)
    run = start_run(out)
    storage.write_bytes(storage.join(out, run, SPLITS_FILE), partition.assignment.to_csv(index=False).encode())
    storage.write_bytes(storage.join(out, run, SUMMARY_FILE), partition.summary().to_csv().encode())
    counts = {split: int((partition.assignment["split"] == split).sum()) for split in ("train", "val", "test")}
    counts["test_clusters"] = list(partition.test_clusters)
    logger.info("partition: %s", counts)
    return PartitionResult(publish(out, run, key, counts, {"partition": to_dict(config)}), reused=False)


def format_partition(result: PartitionResult) -> str:
    (uri,) = result.publication.uris(SUMMARY_FILE)
    summary = storage.read_csv(uri, index_col=[0, 1])
    counts = result.publication.counts
    return (f"partition        train {counts['train']:,} · val {counts['val']:,} · test {counts['test']:,} "
            f"(held-out clusters {counts['test_clusters']})\n{summary.to_string()}")
