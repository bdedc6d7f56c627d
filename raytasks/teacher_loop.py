"""The teacher stage's worker side: what every Ray Train worker runs, and nothing the driver needs.

Each epoch every worker extracts features for its shard, rank 0 gathers them and
runs k-means, the pseudo-labels go back, and one epoch of MS-loss training
follows; rank 0 reports a checkpoint (weights, optimizer, history and the
clustering) that a restarted worker group resumes from.  Kept apart from the
stage (``raytasks.teacher``) so that a worker imports torch, faiss and the
losses (while ``raytasks.worker.run_loop`` reads its shard), not MLflow, the
stage machinery or the plots.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pandas as pd
import ray.train
import torch

from raytasks.checkpoints import report_epoch, restore
from raytasks.specs import TeacherSpec
from raytasks.worker import Shard, equal_steps, start_worker, step_metrics
from skin_core.clustering import cluster_nmi
from skin_core.losses.multi_similarity import MultiSimilarityCriterion
from skin_core.models import create_model
from skin_core.training.teacher import ClusterRound, cluster_globally, extract_features, train_epoch


def _nmi_to_previous(previous: dict | None, current: ClusterRound) -> float:
    """NMI between consecutive assignments, aligned by image id (DeepCluster's convergence signal)."""
    if previous is None:
        return float("nan")
    before = pd.Series(previous["assignments"], index=previous["image_ids"])
    return cluster_nmi(before.reindex(current.image_ids).to_numpy(), current.assignments)


def read_clusters(folder: Path) -> dict:
    """The clustering a checkpoint holds (``clusters.npz``: image ids, assignments, distances)."""
    with np.load(folder / "clusters.npz", allow_pickle=False) as saved:
        return {k: saved[k] for k in saved.files}


def _report(metrics: dict, model: torch.nn.Module, optimizer: torch.optim.Optimizer, clusters: ClusterRound,
            history: list) -> None:
    def save_clusters(folder: Path) -> None:
        np.savez(folder / "clusters.npz", image_ids=clusters.image_ids.astype(str),
                 assignments=clusters.assignments, distances=clusters.distances)

    report_epoch(metrics, model, optimizer, {"epoch": metrics["epoch"], "history": history}, save_clusters)


def _epoch(spec: TeacherSpec, epoch: int, model, optimizer, criterion, shard: Shard, images: torch.Tensor,
           steps: int, device) -> tuple:
    """Cluster everything, then (except after the last epoch) train one epoch on the pseudo-labels."""
    t = spec.teacher
    start, start_time = time.perf_counter(), time.time()
    features = extract_features(model, images, spec.batch_size * 2, device, spec.amp)
    extracted = time.perf_counter()
    clusters = cluster_globally(shard["image_id"], features, t.clusters, t.pca_dim, seed=spec.seed * 1000 + epoch,
                                labels=shard["label_idx"], heldout=shard["heldout"])
    clustered = time.perf_counter()
    stats = {}
    if epoch < t.epochs:
        stats = train_epoch(model, images, clusters.local(), criterion=criterion, optimizer=optimizer,
                            batch_size=spec.batch_size, steps=steps, seed=spec.seed, epoch=epoch, device=device,
                            amp=spec.amp)
    train_s = time.perf_counter() - clustered
    speed = step_metrics(steps, spec.batch_size, train_s) if stats else {}
    times = {"start_time": start_time, "extract_s": extracted - start, "kmeans_s": clustered - extracted,
             "train_s": train_s}
    return clusters, {**stats, **times, **speed, **clusters.quality}


def teacher_loop(loop_config: dict, shard: Shard) -> None:
    """Every epoch on this worker's shard (run by ``raytasks.worker.run_loop``; Ray's pattern: dataset shard,
    core steps, ``report`` with a checkpoint)."""
    spec: TeacherSpec = loop_config["spec"]
    t = spec.teacher
    device = start_worker(spec.threads, spec.seed)
    images = torch.from_numpy(np.ascontiguousarray(shard["pixels"]))
    model = ray.train.torch.prepare_model(create_model(spec.model, head="embedding"))
    optimizer = torch.optim.SGD(model.parameters(), lr=t.lr, momentum=0.9, weight_decay=1e-5)
    state, previous = restore(model, optimizer, read_clusters)
    first, history = (0, []) if state is None else (state["epoch"] + 1, state["history"])
    criterion = MultiSimilarityCriterion(t.ms_alpha, t.ms_beta, t.ms_base, t.miner_epsilon, distributed=True)
    steps = equal_steps(len(images), spec.batch_size)
    for epoch in range(first, t.epochs + 1):
        clusters, stats = _epoch(spec, epoch, model, optimizer, criterion, shard, images, steps, device)
        metrics = {"epoch": epoch, "final": epoch == t.epochs, "attempt_first_epoch": first,
                   "nmi_prev": _nmi_to_previous(previous, clusters),
                   "nonempty_clusters": int((clusters.sizes > 0).sum()),
                   "cluster_sizes": clusters.sizes.tolist(), **stats}
        history = [*history, metrics]
        _report(metrics, model, optimizer, clusters, history)
        previous = {"image_ids": clusters.image_ids, "assignments": clusters.assignments}
