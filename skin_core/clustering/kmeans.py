"""DeepCluster's clustering step: PCA-whiten the features, then k-means with faiss.

Each teacher epoch clusters the whole training set afresh; the assignments are
the pseudo-labels for that epoch and the NMI between consecutive epochs shows
whether the clustering has settled.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import faiss
import numpy as np
from sklearn.metrics import normalized_mutual_info_score

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class KMeansResult:
    """Final k-means partition; every one of the K clusters holds at least one point.

    ``distances`` are squared L2 distances of each point to its own centroid.
    """

    assignments: np.ndarray  # int64 (N,)
    distances: np.ndarray  # float32 (N,)
    centroids: np.ndarray  # float32 (K, D)
    sizes: np.ndarray  # int64 (K,)


def _as_features(x: np.ndarray) -> np.ndarray:
    """``x`` as the C-contiguous float32 N×D matrix faiss needs, rejecting NaN/inf."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    if x.ndim != 2 or x.shape[0] == 0 or x.shape[1] == 0:
        raise ValueError(f"expected a non-empty N×D feature matrix, got shape {x.shape}")
    if not np.isfinite(x).all():
        # A diverged network yields NaN features; faiss would cluster them silently.
        raise ValueError("features contain NaN or inf")
    return x


def l2_normalize(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm (all-zero rows stay zero), as float32."""
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return (x / np.maximum(norms, 1e-12)).astype(np.float32)


def pca_whiten(x: np.ndarray, dim: int) -> np.ndarray:
    """PCA to ``dim`` dimensions with whitening (eigen_power −0.5), then L2-normalise rows.

    ``dim`` is capped at ``min(D, N − 1)``: beyond the data's rank the
    eigenvalues are zero and whitening would divide by them.
    """
    x = _as_features(x)
    n, d = x.shape
    if dim < 1 or n < 2:
        raise ValueError(f"pca_whiten needs dim ≥ 1 and ≥ 2 samples, got dim={dim}, N={n}")
    out_dim = min(dim, d, n - 1)
    if out_dim < dim:
        logger.warning("PCA dim %d capped to %d (N=%d, D=%d)", dim, out_dim, n, d)
    pca = faiss.PCAMatrix(d, out_dim, -0.5)
    pca.train(x)
    y = pca.apply(x)
    if not np.isfinite(y).all():
        raise ValueError(f"PCA whitening to {out_dim} dims gave non-finite values: "
                         f"the features have lower rank; use a smaller dim")
    return l2_normalize(y)


def _gpu_available() -> bool:
    """faiss was built with GPU support (the ``gpu`` extra) and sees a GPU: in a Ray worker, only the ones
    Ray gave it (``CUDA_VISIBLE_DEVICES``), so a CPU worker on a GPU node stays on the CPU."""
    return hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0


def kmeans_on_gpu(use_gpu: bool | None) -> bool:
    """Where k-means runs, decided when it runs: ``None`` → on the GPU when faiss can use one; ``True``
    without one is an error, not a fallback."""
    if use_gpu and not _gpu_available():
        raise RuntimeError("use_gpu=True but faiss has no GPU support or sees no GPU "
                           "(install faiss-gpu on GPU nodes, or pass use_gpu=None/False)")
    return _gpu_available() if use_gpu is None else bool(use_gpu)


def fill_empty_clusters(x: np.ndarray, assignments: np.ndarray, distances: np.ndarray,
                        centroids: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Give every empty cluster one point: the farthest member of the currently largest cluster.

    faiss re-splits clusters that empty during training, but the final
    assignment can still leave one empty, and an empty pseudo-class has no
    samples to draw.  Following DeepCluster (split the largest cluster), the
    largest cluster's worst-fitting point becomes a singleton whose centroid is
    the point itself (distance 0); other centroids are unchanged.  Returns new
    arrays; inputs are not modified.
    """
    assignments, distances, centroids = assignments.copy(), distances.copy(), centroids.copy()
    sizes = np.bincount(assignments, minlength=len(centroids))
    for empty in np.flatnonzero(sizes == 0):
        largest = int(np.argmax(sizes))
        members = np.flatnonzero(assignments == largest)
        far = members[np.argmax(distances[members])]
        assignments[far], distances[far], centroids[empty] = empty, 0.0, x[far]
        sizes[largest] -= 1
        sizes[empty] = 1
        logger.warning("k-means cluster %d empty: moved point %d out of cluster %d", empty, far, largest)
    return assignments, distances, centroids


def _check_args(n: int, k: int, seed: int, niter: int) -> None:
    if not 1 <= k <= n:
        raise ValueError(f"k-means needs 1 ≤ k ≤ N points, got k={k}, N={n}")
    if not 0 <= seed < 2**31:  # faiss takes a C int
        raise ValueError(f"seed must be in [0, 2**31), got {seed}")
    if niter < 1:
        raise ValueError(f"niter must be ≥ 1, got {niter}")


def kmeans(x: np.ndarray, k: int, *, seed: int, niter: int = 20,
           use_gpu: bool | None = None) -> KMeansResult:
    """Lloyd k-means on all N points with faiss (GPU when available), deterministic on CPU.

    faiss subsamples to 256 points per centroid by default; here every point
    takes part in every iteration, as in DeepCluster.
    """
    x = _as_features(x)
    n, d = x.shape
    _check_args(n, k, seed, niter)
    gpu = kmeans_on_gpu(use_gpu)
    km = faiss.Kmeans(d, k, niter=niter, seed=seed, gpu=1 if gpu else False, verbose=False,
                      max_points_per_centroid=n // k + 1,  # k × this > N: no subsampling
                      min_points_per_centroid=1)  # few points per cluster is expected on small sets
    km.train(x)
    dist, idx = km.assign(x)
    # Flat L2 uses ‖x‖² + ‖c‖² − 2x·c, which can round to tiny negatives.
    distances = np.maximum(dist, 0.0).astype(np.float32)
    assignments, distances, centroids = fill_empty_clusters(
        x, idx.astype(np.int64), distances, km.centroids.astype(np.float32))
    sizes = np.bincount(assignments, minlength=k).astype(np.int64)
    logger.info("k-means: %d points, k=%d, sizes %d..%d, gpu=%s", n, k, sizes.min(), sizes.max(), gpu)
    return KMeansResult(assignments, distances, centroids, sizes)


def cluster_nmi(a: np.ndarray, b: np.ndarray) -> float:
    """Normalised mutual information between two labelings of the same points."""
    a, b = np.asarray(a), np.asarray(b)
    if a.ndim != 1 or a.shape != b.shape:
        raise ValueError(f"expected two labelings of equal length, got shapes {a.shape} and {b.shape}")
    return float(normalized_mutual_info_score(a, b))
