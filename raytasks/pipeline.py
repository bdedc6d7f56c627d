"""The whole pipeline, stage by stage; ``jobs/pipeline.py`` and ``skin pipeline`` call ``run_pipeline``."""

from __future__ import annotations

import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path

from skin_core import storage
from raytasks.preprocess import PreprocessResult, format_result, run_preprocess
from raytasks.runtime import init_ray
from skin_core.config import PipelineConfig, config_hash
from skin_core.data.isic import GROUND_TRUTH, load_isic
from skin_core.data.summary import DatasetSummary, format_summary, summarize

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class PipelineResult:
    data_path: str
    dataset: DatasetSummary
    preprocessed: PreprocessResult
    report: str


def ensure_dataset(config: PipelineConfig) -> str:
    """The dataset to run on: ``data.path``, or the synthetic set, generated once under ``out``."""
    if config.data.path:
        return config.data.path
    d = config.data
    path = storage.join(config.out, "data", f"synthetic-n{d.synthetic_n}-s{d.synthetic_size}-seed{d.synthetic_seed}")
    if storage.exists(storage.join(path, GROUND_TRUTH)):  # the generator writes its tables last
        logger.info("reusing the synthetic dataset at %s", path)
        return path
    from skin_core.synth import generate_dataset

    logger.info("generating %d synthetic images at %s", d.synthetic_n, path)
    if not storage.is_s3(path):
        generate_dataset(path, n=d.synthetic_n, size=d.synthetic_size, seed=d.synthetic_seed)
        return path
    with tempfile.TemporaryDirectory() as local:  # the generator writes files; S3 gets a copy
        generate_dataset(local, n=d.synthetic_n, size=d.synthetic_size, seed=d.synthetic_seed)
        storage.upload_tree(Path(local), path, last=(GROUND_TRUTH,))  # its presence means "complete"
    return path


def preprocessed_dir(config: PipelineConfig) -> str:
    """One folder per preprocessing config, so changing a setting never collides with old shards."""
    return storage.join(config.out, "preprocessed", f"{config.preprocess.size}px-{config_hash(config.preprocess)[:8]}")


def run_pipeline(config: PipelineConfig) -> PipelineResult:
    data_path = ensure_dataset(config)
    summary = summarize(load_isic(data_path))
    logger.info("dataset:\n%s", format_summary(summary))
    init_ray()
    preprocessed = run_preprocess(data_path, preprocessed_dir(config), config.preprocess)
    report = "\n\n".join([format_summary(summary), format_result(preprocessed)])
    return PipelineResult(data_path=data_path, dataset=summary, preprocessed=preprocessed, report=report)
