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
import pandas as pd
import ray

from raytasks.preprocess import _preprocess_block, _whole_cluster_for_one_operator, preprocess_manifest
from raytasks.runtime import init_ray
from skin_core.config import PreprocessConfig
from skin_core.data.isic import Manifest, load_isic
from skin_core.preprocessing.records import preprocess_frame


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
    with _whole_cluster_for_one_operator():
        ray.data.from_pandas(manifest.frame, override_num_blocks=math.ceil(len(manifest) / config.batch_size)) \
            .map_batches(_preprocess_block, fn_kwargs={"config": config}, batch_format="pandas",
                         batch_size=config.batch_size, num_cpus=1).materialize()
    return time.perf_counter() - start


def time_ray(manifest: Manifest, config: PreprocessConfig) -> float:
    with tempfile.TemporaryDirectory() as out:
        start = time.perf_counter()
        preprocess_manifest(manifest, out, config)
        return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="../shared/data/isic2019/sample")
    parser.add_argument("--images", type=int, default=1000)
    parser.add_argument("--size", type=int, default=224)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    config = PreprocessConfig(size=args.size)
    manifest = repeated(load_isic(args.data), args.images)
    start = time.perf_counter()
    init_ray()
    time_ray(repeated(manifest, 2 * config.batch_size), config)  # warm-up: worker processes and their imports
    init_s = time.perf_counter() - start
    loop_s = time_loop(manifest, config)
    single_s = time_loop(manifest, config, threads=1)
    map_s = time_map_only(manifest, config)
    ray_s = time_ray(manifest, config)
    n = len(manifest)
    rows = [("single-process loop (baseline; OpenCV's default threads)", loop_s),
            ("single-process loop, OpenCV on 1 thread (as in each Ray task)", single_s),
            ("Ray Data map only (no write)", map_s),
            ("Ray Data pipeline (map + Parquet write + publish)", ray_s)]
    rows = [(name, s, n / s, loop_s / s) for name, s in rows]
    print(f"\n{n} images ({args.data} repeated), {args.size} px output; Ray start-up and worker warm-up {init_s:.1f} s (excluded)")
    print(pd.DataFrame(rows, columns=["path", "seconds", "images/s", "ratio vs loop"]).to_string(index=False))


if __name__ == "__main__":
    main()
