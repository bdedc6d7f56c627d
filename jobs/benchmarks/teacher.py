"""Benchmark: the teacher's epoch time split into feature extraction, k-means and training.

Runs the real Ray Train teacher on a synthetic set and reads the per-epoch
timings it records; the fit's wall time shows Ray Train's own overhead
(worker start-up, data loading, checkpoints) beside them.

    python jobs/benchmarks/teacher.py --n 600 --size 64 --epochs 2
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time
from pathlib import Path

import pandas as pd

from raytasks.preprocess import run_preprocess
from raytasks.runtime import init_ray
from raytasks.teacher import HISTORY, run_teacher
from skin_core import storage
from skin_core.config import PipelineConfig, PreprocessConfig, from_dict
from skin_core.synth import generate_dataset


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=600)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--arch", default="resnet18")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--cpus-per-worker", type=float, default=0.5)
    parser.add_argument("--gpu", action="store_true")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    init_ray()
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        generate_dataset(root / "data", n=args.n, size=max(args.size, 64), seed=0)
        run_preprocess(str(root / "data"), str(root / "pre"), PreprocessConfig(size=args.size))
        config = from_dict(PipelineConfig, {
            "out": str(root), "model": {"arch": args.arch, "embedding_dim": 64},
            "teacher": {"epochs": args.epochs, "clusters": 16, "pca_dim": 64, "batch_size": 32},
            "resources": {"num_workers": args.workers, "cpus_per_worker": args.cpus_per_worker,
                          "use_gpu": args.gpu, "data_cpus": 1.0}})
        start = time.perf_counter()
        result = run_teacher(str(root / "pre"), str(root / "teacher"), config)
        wall = time.perf_counter() - start
        history = storage.read_csv(result.uri(HISTORY), keep_default_na=True)
    epochs = history[~history["final"].astype(bool)][["epoch", "extract_s", "kmeans_s", "train_s"]]
    epochs["total_s"] = epochs[["extract_s", "kmeans_s", "train_s"]].sum(axis=1)
    shares = epochs[["extract_s", "kmeans_s", "train_s"]].sum() / epochs["total_s"].sum()
    print(f"\nteacher: {args.n} images at {args.size} px, {args.arch}, {args.workers} workers, {args.epochs} epochs")
    print(epochs.round(3).to_string(index=False))
    print("share of epoch time: " + "  ".join(f"{k[:-2]} {v:.0%}" for k, v in shares.items()))
    print(f"fit wall time {wall:.1f} s; epochs {epochs['total_s'].sum():.1f} s "
          f"(ratio {wall / epochs['total_s'].sum():.1f}× — the rest is Ray Train start-up, data loading, checkpoints)")
    print(pd.Series(history["nmi_prev"].values, index=history["epoch"], name="NMI to previous epoch").to_string())


if __name__ == "__main__":
    main()
