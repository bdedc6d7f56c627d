"""Benchmark: the teacher's epoch time split into feature extraction, k-means and training.

Runs the real Ray Train teacher on a synthetic set and reads the per-epoch
timings it records; the fit's wall time shows Ray Train's own overhead
(worker start-up, data loading, checkpoints) beside them.  Ratios are to the
epochs' total time: a phase's ratio is its share.

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

if __package__:  # imported as benchmarks.teacher by jobs/benchmark.py
    from .table import print_rows, row
else:  # run as a script
    from table import print_rows, row

NAME = "teacher"
PHASES = ("extract_s", "kmeans_s", "train_s")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=600)
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--arch", default="resnet18")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--cpus-per-worker", type=float, default=0.5)
    p.add_argument("--gpu", action="store_true")
    return p


def pipeline_config(root: Path, args: argparse.Namespace) -> PipelineConfig:
    return from_dict(PipelineConfig, {
        "out": str(root), "model": {"arch": args.arch, "embedding_dim": 64},
        "teacher": {"epochs": args.epochs, "clusters": 16, "pca_dim": 64, "batch_size": 32},
        "resources": {"num_workers": args.workers, "cpus_per_worker": args.cpus_per_worker,
                      "use_gpu": args.gpu, "data_cpus": 1.0}})


def fit(args: argparse.Namespace) -> tuple[pd.DataFrame, float]:
    """The teacher's recorded history and the fit's wall time, on a fresh synthetic set."""
    init_ray()
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        generate_dataset(root / "data", n=args.n, size=max(args.size, 64), seed=0)
        run_preprocess(str(root / "data"), str(root / "pre"), PreprocessConfig(size=args.size))
        start = time.perf_counter()
        result = run_teacher(str(root / "pre"), str(root / "teacher"), pipeline_config(root, args))
        wall = time.perf_counter() - start
        return storage.read_csv(result.uri(HISTORY), keep_default_na=True), wall


def epoch_times(history: pd.DataFrame) -> pd.DataFrame:
    """Each training epoch's seconds per phase and in total (the final clustering-only pass left out)."""
    epochs = history[~history["final"].astype(bool)][["epoch", *PHASES]]
    return epochs.assign(total_s=epochs[list(PHASES)].sum(axis=1))


def rows(history: pd.DataFrame, wall: float) -> list[dict]:
    """Each phase's seconds and the fit's wall time as ratios to the epochs' total."""
    epochs = epoch_times(history)
    total = epochs["total_s"].sum()
    return [*(row(NAME, f"{phase[:-2]} (share of epoch time)", epochs[phase].sum(), "s", total) for phase in PHASES),
            row(NAME, "training epochs, total (baseline)", total, "s", total),
            row(NAME, "fit wall time (+ Ray Train start-up, data loading, checkpoints)", wall, "s", total),
            row(NAME, "NMI of the final clusters to the previous epoch's", history["nmi_prev"].iloc[-1], "NMI")]


def measure(args: argparse.Namespace) -> list[dict]:
    return rows(*fit(args))


def main() -> None:
    args = parser().parse_args()
    logging.basicConfig(level=logging.WARNING)
    history, wall = fit(args)
    print(f"\nteacher: {args.n} images at {args.size} px, {args.arch}, {args.workers} workers, {args.epochs} epochs")
    print(epoch_times(history).round(3).to_string(index=False))
    print_rows(rows(history, wall))
    print(pd.Series(history["nmi_prev"].values, index=history["epoch"], name="NMI to previous epoch").to_string())


if __name__ == "__main__":
    main()
