"""Benchmark: faiss k-means (skin_core.clustering.kmeans) against scikit-learn's KMeans.

Both cluster the same features (a fixed-seed mixture of K Gaussians, float32)
into K clusters with the same number of Lloyd iterations and random-point
initialisation, each including its final assignment pass.  Each is run once to
warm up (BLAS/OpenMP thread pools, page faults) and then ``--repeats`` times;
the median is reported.  scikit-learn stops early when labels stop changing, so
its iteration count is printed and per-iteration times are compared too.
Prints both times, faiss's as a ratio to scikit-learn's (0.25× is a quarter of
its time), and the NMIs between the two partitions and the planted one.

    python jobs/benchmarks/kmeans.py --n 25000 --dim 2048 --k 16
"""

from __future__ import annotations

import argparse
import logging
import os
import time
from typing import Callable

import numpy as np
from sklearn.cluster import KMeans

from skin_core.clustering import cluster_nmi, kmeans

if __package__:  # imported as benchmarks.kmeans by jobs/benchmark.py
    from .table import print_rows, row
else:  # run as a script
    from table import print_rows, row

NAME = "kmeans"


def mixture(n: int, dim: int, k: int, spread: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``n`` points from ``k`` unit-variance Gaussians, centres drawn with std ``spread``."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(scale=spread, size=(k, dim)).astype(np.float32)
    labels = rng.integers(k, size=n)
    return centres[labels] + rng.standard_normal((n, dim), dtype=np.float32), labels


def time_faiss(x: np.ndarray, k: int, niter: int, seed: int) -> tuple[float, np.ndarray]:
    start = time.perf_counter()
    result = kmeans(x, k, seed=seed, niter=niter, use_gpu=False)
    return time.perf_counter() - start, result.assignments


def time_sklearn(x: np.ndarray, k: int, niter: int, seed: int) -> tuple[float, np.ndarray, int]:
    # tol=0 so only label convergence (not a centre-shift threshold) stops it early.
    model = KMeans(n_clusters=k, init="random", n_init=1, max_iter=niter, tol=0.0,
                   algorithm="lloyd", random_state=seed)
    start = time.perf_counter()
    labels = model.fit_predict(x)
    return time.perf_counter() - start, labels, model.n_iter_


def median_run(fn: Callable[[], tuple], repeats: int) -> tuple:
    """``fn()`` once to warm up, then ``repeats`` times; the run with the median time."""
    fn()
    runs = sorted((fn() for _ in range(repeats)), key=lambda run: run[0])
    return runs[len(runs) // 2]


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=25_000)
    p.add_argument("--dim", type=int, default=2048)
    p.add_argument("--k", type=int, default=16)
    p.add_argument("--niter", type=int, default=20)
    p.add_argument("--spread", type=float, default=0.1, help="std of the centres (noise std is 1)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--repeats", type=int, default=3)
    return p


def measure(args: argparse.Namespace) -> list[dict]:
    """Seconds and ms/iteration of faiss as ratios to scikit-learn's, and the NMIs between the partitions."""
    x, truth = mixture(args.n, args.dim, args.k, args.spread, args.seed)
    faiss_s, faiss_labels = median_run(lambda: time_faiss(x, args.k, args.niter, args.seed), args.repeats)
    sk_s, sk_labels, sk_iter = median_run(lambda: time_sklearn(x, args.k, args.niter, args.seed), args.repeats)
    faiss_ms, sk_ms = faiss_s / args.niter * 1e3, sk_s / sk_iter * 1e3
    return [row(NAME, "scikit-learn KMeans (baseline)", sk_s, "s", sk_s),
            row(NAME, "faiss (all points, CPU)", faiss_s, "s", sk_s),
            row(NAME, f"scikit-learn per iteration ({sk_iter} iterations)", sk_ms, "ms/it", sk_ms),
            row(NAME, f"faiss per iteration ({args.niter} iterations)", faiss_ms, "ms/it", sk_ms),
            row(NAME, "NMI faiss vs scikit-learn", cluster_nmi(faiss_labels, sk_labels), "NMI"),
            row(NAME, "NMI faiss vs planted", cluster_nmi(truth, faiss_labels), "NMI"),
            row(NAME, "NMI scikit-learn vs planted", cluster_nmi(truth, sk_labels), "NMI")]


def main() -> None:
    args = parser().parse_args()
    logging.basicConfig(level=logging.WARNING)
    rows = measure(args)
    print(f"{args.n} × {args.dim} float32, K={args.k}, max {args.niter} iterations, "
          f"{os.cpu_count()} CPUs, median of {args.repeats}")
    print_rows(rows)


if __name__ == "__main__":
    main()
