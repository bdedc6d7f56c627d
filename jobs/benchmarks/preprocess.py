"""Benchmark: the Ray Data preprocessing pipeline against a plain single-process loop.

Both run the same ``skin_core`` function (``preprocess_frame``) on the same images
in one run; the figure that matters is their ratio.  The real shared sample
(211 ISIC images, 96 of them 1024×1024 BCN with black borders) is repeated to
``--images`` rows under distinct ids.

    python jobs/benchmarks/preprocess.py --data ../shared/data/isic2019/sample --images 1000
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import math
import tempfile
import time

import cv2
import ray

from raytasks.preprocess import WHOLE_CLUSTER_FOR_ONE_OPERATOR, data_context, preprocess_stage
from raytasks.runtime import init_ray
from raytasks.stages import run_stage
from raytasks.tracking import TrackedRun
from raytasks.udfs import preprocess_block
from skin_core.config import PreprocessConfig
from skin_core.data.isic import Manifest, load_isic
from skin_core.preprocessing.records import preprocess_frame

if __package__:  # imported as benchmarks.preprocess by jobs/benchmark.py
    from .table import print_rows, row
else:  # run as a script
    from table import print_rows, row

NAME = "preprocess"


def repeated(manifest: Manifest, images: int) -> Manifest:
    """The manifest's rows cycled to ``images`` rows, each with its own id."""
    frame = manifest.frame.iloc[[i % len(manifest) for i in range(images)]].reset_index(drop=True)
    frame["image_id"] = [f"{image_id}-r{i}" for i, image_id in enumerate(frame["image_id"])]
    return dataclasses.replace(manifest, frame=frame, rejects=())


def time_loop(manifest: Manifest, config: PreprocessConfig, threads: int | None = None) -> float:
    """The plain loop; ``threads`` pins OpenCV's own pool (each Ray task runs with 1)."""
    previous = cv2.getNumThreads()
    cv2.setNumThreads(previous if threads is None else threads)
    start = time.perf_counter()
    for begin in range(0, len(manifest), config.batch_size):
        preprocess_frame(manifest.frame.iloc[begin:begin + config.batch_size], config)
    cv2.setNumThreads(previous)
    return time.perf_counter() - start


def time_map_only(manifest: Manifest, config: PreprocessConfig) -> float:
    """The Ray map alone, results kept in the object store: the pipeline minus writing and publishing."""
    start = time.perf_counter()
    with data_context(**WHOLE_CLUSTER_FOR_ONE_OPERATOR):
        ray.data.from_pandas(manifest.frame, override_num_blocks=math.ceil(len(manifest) / config.batch_size)) \
            .map_batches(preprocess_block, fn_kwargs={"config": config}, batch_format="pandas",
                         batch_size=config.batch_size, num_cpus=1).materialize()
    return time.perf_counter() - start


def time_ray(manifest: Manifest, config: PreprocessConfig) -> float:
    with tempfile.TemporaryDirectory() as out:
        start = time.perf_counter()
        run_stage(preprocess_stage(manifest, config), out, TrackedRun())
        return time.perf_counter() - start


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default="../shared/data/isic2019/sample")
    p.add_argument("--images", type=int, default=1000)
    p.add_argument("--size", type=int, default=224)
    return p


def warm_up(manifest: Manifest, config: PreprocessConfig) -> float:
    """Seconds to start Ray and warm its workers (processes and their imports)."""
    start = time.perf_counter()
    init_ray()
    time_ray(repeated(manifest, 2 * config.batch_size), config)
    return time.perf_counter() - start


def measure(args: argparse.Namespace) -> list[dict]:
    """Images/s of each path, as a ratio to the plain loop (OpenCV's default threads)."""
    config = PreprocessConfig(size=args.size)
    manifest = repeated(load_isic(args.data), args.images)
    init_s = warm_up(manifest, config)
    loop_s = time_loop(manifest, config)
    paths = [("single-process loop (baseline; OpenCV's default threads)", loop_s),
             ("single-process loop, OpenCV on 1 thread (as in each Ray task)", time_loop(manifest, config, threads=1)),
             ("Ray Data map only (no write)", time_map_only(manifest, config)),
             ("Ray Data pipeline (map + Parquet write + publish)", time_ray(manifest, config))]
    n = len(manifest)
    return [row(NAME, "Ray start-up and worker warm-up (excluded)", init_s, "s"),
            *(row(NAME, path, n / s, "images/s", n / loop_s) for path, s in paths)]


def main() -> None:
    args = parser().parse_args()
    logging.basicConfig(level=logging.WARNING)
    rows = measure(args)
    print(f"\n{args.images} images ({args.data} repeated), {args.size} px output")
    print_rows(rows)


if __name__ == "__main__":
    main()
