"""Preprocessing on Ray Data: manifest → image bytes → ``map_batches`` over CPU workers → Parquet shards.

The per-image work is ``skin_core.preprocessing.records.preprocess_frame``;
Ray only schedules it.  Output is published atomically (``skin_core.publish``):
shards and the rejects table go to a fresh run folder, the completion marker
comes last.  Re-running with the same input and config is a no-op; another
config is refused rather than mixed in.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import time
from dataclasses import dataclass
from typing import Iterator

import pandas as pd
import pyarrow.dataset as pads
import ray
from ray.data.expressions import col

from raytasks.stages import Stage, StageContext, StageOutput, run_stage
from raytasks.tracking import TrackedRun
from raytasks.udfs import preprocess_block
from skin_core import storage
from skin_core.config import PreprocessConfig, flatten, to_dict
from skin_core.data.isic import DatasetError, Manifest, load_isic

logger = logging.getLogger(__name__)

SHARD_DIR = "shards"
REJECTS_FILE = "rejects.csv"
ROWS_PER_SHARD = 128  # ~15 MB files at 224 px; larger ones make the write wait on more map tasks


@dataclass(frozen=True)
class PreprocessSummary:
    """What a preprocessing run did (the counts of its completion marker)."""

    images_in: int
    written: int
    borders_removed: int
    rejected: dict  # reason → count
    seconds: float
    images_per_s: float


def preprocess_inputs(manifest: Manifest, config: PreprocessConfig) -> dict:
    """What decides the output: the images and labels, and the output-shaping settings."""
    listing = "\n".join(manifest.frame["image_id"] + "," + manifest.frame["label"] + "," + manifest.frame["uri"])
    settings = {k: v for k, v in to_dict(config).items() if k != "batch_size"}  # batching never changes pixels
    return {"settings": settings, "images": hashlib.sha256(listing.encode()).hexdigest()}


# Lets the map take every CPU: Ray Data otherwise reserves a share per operator, and on a 2-core machine that
# leaves one core idle (measured: 1.1× instead of 1.8× over a plain loop).
WHOLE_CLUSTER_FOR_ONE_OPERATOR = {"op_resource_reservation_enabled": False}


@contextlib.contextmanager
def data_context(**settings: object) -> Iterator[None]:
    """Ray Data's ``DataContext`` with ``settings`` for the block (what a dataset built in it captures), then
    as it was."""
    context = ray.data.DataContext.get_current()
    before = {name: getattr(context, name) for name in settings}
    for name, value in settings.items():
        setattr(context, name, value)
    try:
        yield
    finally:
        for name, value in before.items():
            setattr(context, name, value)


def _write_shards(manifest: Manifest, shards: str, config: PreprocessConfig) -> None:
    # one block per batch, cut here: from_pandas(override_num_blocks=...) cuts with np.array_split, which warns
    # (FutureWarning, DataFrame.swapaxes) on every run. Never empty: preprocess_stage refuses an empty manifest.
    frame, size = manifest.frame, config.batch_size
    blocks = [frame.iloc[start:start + size] for start in range(0, len(frame), size)]
    with data_context(**WHOLE_CLUSTER_FOR_ONE_OPERATOR):
        dataset = ray.data.from_pandas(blocks)
        dataset = dataset.map_batches(preprocess_block, fn_kwargs={"config": config}, batch_format="pandas",
                                      batch_size=config.batch_size, num_cpus=1)
        dataset.write_parquet(shards, min_rows_per_file=ROWS_PER_SHARD)


def _tally(manifest: Manifest, context: StageContext, seconds: float) -> PreprocessSummary:
    """Counts from the written shards; the rejects table goes beside them."""
    # A few small columns: pyarrow on the driver, not another Ray Data job (saves ~1 s of scheduling).
    filesystem, path = storage.arrow_filesystem(context.path(SHARD_DIR))
    done = pads.dataset(path, filesystem=filesystem, format="parquet").to_table(
        columns=["image_id", "uri", "had_border", "reject_reason"]).to_pandas()
    failed = done[done["reject_reason"] != ""]
    rejects = pd.concat([
        pd.DataFrame([(r.image_id, r.uri, r.reason) for r in manifest.rejects], columns=["image_id", "uri", "reason"]),
        failed.rename(columns={"reject_reason": "reason"})[["image_id", "uri", "reason"]]], ignore_index=True)
    context.write_csv(REJECTS_FILE, rejects)
    return PreprocessSummary(
        images_in=len(manifest) + len(manifest.rejects), written=int((done["reject_reason"] == "").sum()),
        borders_removed=int(done.loc[done["reject_reason"] == "", "had_border"].sum()),
        rejected={str(k): int(v) for k, v in rejects["reason"].value_counts().items()},
        seconds=round(seconds, 2), images_per_s=round(len(manifest) / max(seconds, 1e-9), 1))


def preprocess_stage(manifest: Manifest, config: PreprocessConfig) -> Stage[PreprocessSummary]:
    """Decode, remove black edges and resize every image of ``manifest`` into Parquet shards."""
    if len(manifest) == 0:
        raise DatasetError(f"{manifest.root}: no images to preprocess ({len(manifest.rejects)} rejected while listing)")

    def write(context: StageContext) -> PreprocessSummary:
        logger.info("preprocessing %d images from %s into %s", len(manifest), manifest.root, context.run_uri)
        start = time.perf_counter()
        _write_shards(manifest, context.path(SHARD_DIR), config)
        return _tally(manifest, context, time.perf_counter() - start)

    params = {"data.path": manifest.root, **flatten({"preprocess": to_dict(config)})}
    return Stage("preprocessed", preprocess_inputs(manifest, config), PreprocessSummary, write, name="preprocess",
                 params=params, exclude=(".parquet",))  # the shards stay in storage; the run links them


def run_preprocess(data: str, out: str, config: PreprocessConfig,
                   tracker: TrackedRun = TrackedRun()) -> StageOutput[PreprocessSummary]:
    """Preprocess the ISIC-layout dataset at ``data`` into published shards at ``out`` (a no-op when done)."""
    return run_stage(preprocess_stage(load_isic(data), config), out, tracker)


def read_table(preprocessed: StageOutput, columns: list[str], image_ids: list[str] | None = None) -> pd.DataFrame:
    """Some columns of the successfully preprocessed rows (of ``image_ids`` only, when given), read on the driver.

    For small reads (labels, a few thumbnails): pyarrow directly, in well under a
    second, where a Ray Data job would first start its tasks.
    """
    filesystem, _ = storage.arrow_filesystem(preprocessed.folder)
    paths = [storage.arrow_filesystem(u)[1] for u in preprocessed.publication.uris(".parquet")]
    condition = pads.field("reject_reason") == ""
    if image_ids is not None:
        condition = condition & pads.field("image_id").isin(list(image_ids))
    dataset = pads.dataset(paths, filesystem=filesystem, format="parquet")
    return dataset.to_table(columns=columns, filter=condition).to_pandas()


def read_shards(preprocessed: StageOutput, columns: list[str] | None = None) -> ray.data.Dataset:
    """The published, successfully preprocessed images as a Ray Dataset."""
    # The publication names every file, so Ray Data's DataSourceV2 (its Parquet default in 2.60) would only add a
    # ListFiles task that reads each footer remotely before the first row: on 2 cores, one student stage's read of
    # 1,400 images took 2.3-6.6 s through it and 0.7-2.7 s through V1 (jobs/benchmarks data, cold to warm).
    with data_context(use_datasource_v2=False):
        dataset = ray.data.read_parquet(preprocessed.publication.uris(".parquet"))
    if columns is not None:  # Ray Data pushes the selection down into the read
        dataset = dataset.select_columns(list(dict.fromkeys([*columns, "reject_reason"])))
    dataset = dataset.filter(expr=col("reject_reason") == "")  # rejected rows are kept on disk for the record
    return dataset if columns is None else dataset.select_columns(columns)


def format_result(result: StageOutput[PreprocessSummary]) -> str:
    c = result.summary
    rejected = ", ".join(f"{k}: {v}" for k, v in sorted(c.rejected.items())) or "none"
    lines = [f"output           {result.out}" + ("  (reused: same input and config)" if result.reused else ""),
             f"images in        {c.images_in:,}",
             f"written          {c.written:,}",
             f"borders removed  {c.borders_removed:,}",
             f"rejected         {sum(c.rejected.values()):,} ({rejected})",
             f"throughput       {c.images_per_s:,} images/s over {c.seconds} s"]
    return "\n".join(lines)
