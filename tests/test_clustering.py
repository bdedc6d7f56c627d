"""DeepCluster's clustering step (PCA whitening, faiss k-means, NMI) and the uniform sampler."""

from __future__ import annotations

import importlib

import faiss
import numpy as np
import pytest

from skin_core.clustering import (UniformClusterSampler, cluster_nmi, fill_empty_clusters, kmeans,
                                  pca_whiten)


def blobs(k: int, per: int, dim: int, *, spread: float = 10.0, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``k`` unit-variance Gaussian blobs of ``per`` points around random centres."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(scale=spread, size=(k, dim))
    labels = np.repeat(np.arange(k), per)
    return (centres[labels] + rng.normal(size=(k * per, dim))).astype(np.float32), labels


def test_kmeans_recovers_planted_clusters() -> None:
    x, truth = blobs(16, 50, 32)
    result = kmeans(x, 16, seed=3)
    assert cluster_nmi(truth, result.assignments) >= 0.9
    assert result.assignments.shape == (800,) and result.assignments.dtype == np.int64
    assert result.sizes.sum() == 800 and (result.sizes > 0).all()
    assert result.centroids.shape == (16, 32) and result.centroids.dtype == np.float32


def test_kmeans_distances_are_to_own_centroid() -> None:
    x, _ = blobs(4, 30, 8)
    result = kmeans(x, 4, seed=0)
    expected = ((x - result.centroids[result.assignments]) ** 2).sum(axis=1)
    np.testing.assert_allclose(result.distances, expected, rtol=1e-4, atol=1e-3)


def _exact_mean_error(x: np.ndarray, assignments: np.ndarray, centroids: np.ndarray) -> float:
    means = np.stack([x[assignments == c].mean(axis=0) for c in range(len(centroids))])
    return float(np.abs(means - centroids).max())


def test_kmeans_uses_every_point() -> None:
    """Centroids are the exact means of all assigned points; faiss's 256-per-centroid default is not."""
    x, _ = blobs(2, 1000, 16, spread=20.0)
    result = kmeans(x, 2, seed=0)
    assert _exact_mean_error(x, result.assignments, result.centroids) < 1e-4
    default = faiss.Kmeans(16, 2, niter=20, seed=0)  # subsamples 512 of the 2000 points
    default.train(x)
    _, labels = default.assign(x)
    assert _exact_mean_error(x, labels, default.centroids) > 1e-2


def test_kmeans_same_seed_same_assignments() -> None:
    x = np.random.default_rng(1).normal(size=(300, 16)).astype(np.float32)  # no structure: init matters
    first, again = kmeans(x, 8, seed=7), kmeans(x, 8, seed=7)
    np.testing.assert_array_equal(first.assignments, again.assignments)
    np.testing.assert_array_equal(first.centroids, again.centroids)


def test_kmeans_rejects_bad_input() -> None:
    x, _ = blobs(2, 5, 4)
    with pytest.raises(ValueError, match="k=11, N=10"):
        kmeans(x, 11, seed=0)
    x[0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        kmeans(x, 2, seed=0)


def test_kmeans_rejects_gpu_request_without_gpu() -> None:
    if faiss.get_num_gpus() > 0:
        pytest.skip("a GPU is visible to faiss")
    with pytest.raises(RuntimeError, match="use_gpu=True"):
        kmeans(blobs(2, 5, 4)[0], 2, seed=0, use_gpu=True)


def test_kmeans_picks_the_gpu_at_run_time_when_faiss_sees_one(monkeypatch: pytest.MonkeyPatch,
                                                               caplog: pytest.LogCaptureFixture) -> None:
    module = importlib.import_module("skin_core.clustering.kmeans")  # the package's `kmeans` is the function

    monkeypatch.setattr(module, "_gpu_available", lambda: True)  # a GPU node with the gpu extra
    assert module.kmeans_on_gpu(None) and module.kmeans_on_gpu(True) and not module.kmeans_on_gpu(False)
    monkeypatch.setattr(module, "_gpu_available", lambda: False)  # a CPU node, or a CPU worker on a GPU node
    assert not module.kmeans_on_gpu(None)
    with pytest.raises(RuntimeError, match="use_gpu=True"):
        module.kmeans_on_gpu(True)
    with caplog.at_level("INFO", logger=module.__name__):
        kmeans(blobs(2, 5, 4)[0], 2, seed=0)  # the default asks at run time, and runs where it was told
    assert "gpu=False" in caplog.text


def test_fill_empty_clusters_moves_farthest_point_of_largest() -> None:
    x = np.arange(12, dtype=np.float32).reshape(6, 2)
    assignments = np.array([0, 0, 0, 0, 2, 2])
    distances = np.array([1.0, 9.0, 2.0, 3.0, 1.0, 1.0], dtype=np.float32)
    centroids = np.zeros((3, 2), dtype=np.float32)
    new_a, new_d, new_c = fill_empty_clusters(x, assignments, distances, centroids)
    assert new_a.tolist() == [0, 1, 0, 0, 2, 2]
    assert new_d[1] == 0.0 and new_c[1].tolist() == x[1].tolist()
    assert assignments[1] == 0  # inputs untouched


def test_pca_whiten_dims_and_norms() -> None:
    x, _ = blobs(4, 50, 64)
    y = pca_whiten(x, 16)
    assert y.shape == (200, 16) and y.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(y, axis=1), 1.0, atol=1e-5)


def test_pca_whiten_caps_dim_at_rank() -> None:
    x = np.random.default_rng(0).normal(size=(20, 64)).astype(np.float32)
    y = pca_whiten(x, 256)
    assert y.shape == (20, 19)
    assert np.isfinite(y).all()


def test_pca_whiten_is_numpy_pca_whitening_then_unit_rows() -> None:
    """Against PCA by hand: centre, project on the top eigenvectors, divide by √eigenvalue, L2-normalise."""
    rng = np.random.default_rng(0)
    x = (rng.normal(size=(2000, 8)) * np.array([100, 30, 10, 3, 1, 1, 1, 1])).astype(np.float32)
    centred = x.astype(np.float64) - x.mean(axis=0)
    eigenvalues, eigenvectors = np.linalg.eigh(centred.T @ centred / len(x))
    top = np.argsort(eigenvalues)[::-1][:4]
    whitened = centred @ eigenvectors[:, top] / np.sqrt(eigenvalues[top])
    expected = whitened / np.linalg.norm(whitened, axis=1, keepdims=True)
    y = pca_whiten(x, 4)
    signs = np.sign((y * expected).sum(axis=0))  # an eigenvector's sign is arbitrary
    np.testing.assert_allclose(y * signs, expected, atol=2e-3)


def test_cluster_nmi_is_label_permutation_invariant() -> None:
    a = np.array([0, 0, 1, 1, 2, 2])
    assert cluster_nmi(a, (a + 1) % 3) == pytest.approx(1.0)
    assert cluster_nmi(a, np.zeros(6, dtype=int)) == pytest.approx(0.0)


def _imbalanced() -> np.ndarray:
    return np.repeat([0, 1, 2], [900, 90, 10])


def test_sampler_is_uniform_over_clusters() -> None:
    labels = _imbalanced()
    drawn = np.array(list(UniformClusterSampler(labels, seed=0)))
    assert len(drawn) == 1000
    freq = np.bincount(labels[drawn], minlength=3) / len(drawn)
    np.testing.assert_allclose(freq, 1 / 3, atol=0.01)


def test_sampler_ranks_split_the_epoch() -> None:
    labels = _imbalanced()
    whole = list(UniformClusterSampler(labels, seed=5))
    ranks = [list(UniformClusterSampler(labels, seed=5, rank=r, world_size=2)) for r in (0, 1)]
    assert len(ranks[0]) == len(ranks[1]) == 500
    # Interleaving the two slices gives back the single-process epoch: disjoint and complete.
    assert [i for pair in zip(*ranks) for i in pair] == whole


def test_sampler_pads_to_equal_length_on_every_rank() -> None:
    samplers = [UniformClusterSampler(_imbalanced(), 1001, seed=0, rank=r, world_size=4) for r in range(4)]
    assert {len(list(s)) for s in samplers} == {len(samplers[0])} == {251}


def test_sampler_set_epoch_changes_order() -> None:
    sampler = UniformClusterSampler(_imbalanced(), seed=0)
    first = list(sampler)
    assert list(sampler) == first
    sampler.set_epoch(1)
    assert list(sampler) != first
