"""The metric teacher on Ray Train: DeepCluster with the Multi-Similarity loss, DDP across workers.

Each epoch every worker extracts features for its shard, rank 0 gathers them and
runs k-means, the pseudo-labels go back, and one epoch of MS-loss training
follows (uniform over clusters).  Rank 0 reports a checkpoint each epoch; a
restarted worker group (``FailureConfig.max_failures``) or a re-submitted
driver (same ``name`` and ``storage_path``) resumes from the latest one.
The published outputs are the teacher weights, the cluster assignment table,
the per-epoch history and the cluster montage.
"""

from __future__ import annotations

import io
import json
import logging
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import ray.train
import ray.train.torch
import torch
from ray.train import CheckpointConfig, FailureConfig, RunConfig
from ray.train.torch import TorchTrainer

from raytasks.checkpoints import report_epoch, unwrap
from raytasks.preprocess import read_shards
from raytasks.runtime import scaling_config, storage_path
from skin_core import storage
from skin_core.clustering import cluster_nmi
from skin_core.config import ModelConfig, PipelineConfig, TeacherConfig, config_hash, to_dict
from skin_core.data.transforms import decode_pngs
from skin_core.distributed import all_min
from skin_core.losses import MultiSimilarityCriterion
from skin_core.models import Backbone
from skin_core.plots.montage import cluster_montage
from skin_core.publish import Publication, publish, require_publication, reusable, start_run
from skin_core.training.teacher import ClusterRound, cluster_globally, extract_features, train_epoch

logger = logging.getLogger(__name__)

WEIGHTS, ASSIGNMENTS, HISTORY, MONTAGE = "teacher.pt", "assignments.csv", "history.csv", "cluster_montage.png"


@dataclass(frozen=True)
class TeacherSpec:
    """What each worker needs; plain frozen dataclasses travel to workers intact."""

    model: ModelConfig
    teacher: TeacherConfig
    seed: int
    amp: bool


@dataclass(frozen=True)
class TeacherResult:
    publication: Publication
    reused: bool

    def uri(self, name: str) -> str:
        return storage.join(self.publication.out, self.publication.run, name)


# ---------------------------------------------------------------- worker side


def _load_shard(shard: ray.data.DataIterator) -> tuple[np.ndarray, torch.Tensor]:
    """This worker's images in memory: DeepCluster revisits them every epoch, by cluster."""
    ids, pixels = [], []
    for batch in shard.iter_batches(batch_size=256, batch_format="numpy"):
        ids.append(batch["image_id"].astype(str))
        pixels.append(batch["pixels"])
    return np.concatenate(ids), torch.from_numpy(np.concatenate(pixels))


def _restore(model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> tuple[int, dict | None, list]:
    """(first epoch to run, previous clustering, history) from the latest checkpoint, if any."""
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is None:
        return 0, None, []
    with checkpoint.as_directory() as folder:
        d = Path(folder)
        unwrap(model).load_state_dict(torch.load(d / "model.pt", map_location="cpu", weights_only=True))
        optimizer.load_state_dict(torch.load(d / "optimizer.pt", map_location="cpu", weights_only=True))
        state = json.loads((d / "state.json").read_text())
        with np.load(d / "clusters.npz", allow_pickle=False) as saved:
            previous = {k: saved[k] for k in saved.files}
    logger.info("resuming the teacher after epoch %d", state["epoch"])
    return state["epoch"] + 1, previous, state["history"]


def _nmi_to_previous(previous: dict | None, current: ClusterRound) -> float:
    """NMI between consecutive assignments, aligned by image id (DeepCluster's convergence signal)."""
    if previous is None:
        return float("nan")
    before = pd.Series(previous["assignments"], index=previous["image_ids"])
    return cluster_nmi(before.reindex(current.image_ids).to_numpy(), current.assignments)


def _report(metrics: dict, model: torch.nn.Module, optimizer: torch.optim.Optimizer, clusters: ClusterRound,
            history: list) -> None:
    def save_clusters(folder: Path) -> None:
        np.savez(folder / "clusters.npz", image_ids=clusters.image_ids.astype(str),
                 assignments=clusters.assignments, distances=clusters.distances)

    report_epoch(metrics, model, optimizer, {"epoch": metrics["epoch"], "history": history}, save_clusters)


def _epoch(spec: TeacherSpec, epoch: int, model, optimizer, criterion, ids, images, steps, device) -> tuple:
    """Cluster everything, then (except after the last epoch) train one epoch on the pseudo-labels."""
    t = spec.teacher
    start = time.perf_counter()
    features = extract_features(model, images, t.batch_size * 2, device, spec.amp)
    extracted = time.perf_counter()
    clusters = cluster_globally(ids, features, t.clusters, t.pca_dim, seed=spec.seed * 1000 + epoch)
    clustered = time.perf_counter()
    stats = {}
    if epoch < t.epochs:
        stats = train_epoch(model, images, clusters.local(), criterion=criterion, optimizer=optimizer,
                            batch_size=t.batch_size, steps=steps, seed=spec.seed, epoch=epoch, device=device,
                            amp=spec.amp)
    times = {"extract_s": extracted - start, "kmeans_s": clustered - extracted,
             "train_s": time.perf_counter() - clustered}
    return clusters, {**stats, **times}


def teacher_loop(loop_config: dict) -> None:
    """Ray Train worker function (Ray's pattern: dataset shard, core steps, ``report`` with a checkpoint)."""
    spec: TeacherSpec = loop_config["spec"]
    torch.manual_seed(spec.seed)
    device = ray.train.torch.get_device()
    ids, images = _load_shard(ray.train.get_dataset_shard("train"))
    model = ray.train.torch.prepare_model(Backbone(spec.model.arch, spec.model.embedding_dim, spec.model.weights))
    optimizer = torch.optim.SGD(model.parameters(), lr=spec.teacher.lr, momentum=0.9, weight_decay=1e-5)
    first, previous, history = _restore(model, optimizer)
    t = spec.teacher
    criterion = MultiSimilarityCriterion(t.ms_alpha, t.ms_beta, t.ms_base, t.miner_epsilon, distributed=True)
    steps = max(1, all_min(len(ids)) // t.batch_size)  # DDP ranks must take the same number of steps
    for epoch in range(first, t.epochs + 1):
        clusters, stats = _epoch(spec, epoch, model, optimizer, criterion, ids, images, steps, device)
        metrics = {"epoch": epoch, "final": epoch == t.epochs, "attempt_first_epoch": first,
                   "nmi_prev": _nmi_to_previous(previous, clusters),
                   "nonempty_clusters": int((clusters.sizes > 0).sum()),
                   "cluster_sizes": clusters.sizes.tolist(), **stats}
        history = [*history, metrics]
        _report(metrics, model, optimizer, clusters, history)
        previous = {"image_ids": clusters.image_ids, "assignments": clusters.assignments}


# ---------------------------------------------------------------- driver side


def teacher_key(preprocessed: Publication, config: PipelineConfig) -> str:
    return config_hash({"data": preprocessed.config_hash, "model": to_dict(config.model),
                        "teacher": to_dict(config.teacher), "seed": config.seed})


def _decode(batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {"image_id": batch["image_id"], "pixels": decode_pngs(list(batch["image"]))}


def fit_teacher(preprocessed: str, out: str, config: PipelineConfig, key: str) -> ray.train.Result:
    """Run the Ray Train job; checkpoints live under ``out/checkpoints`` so a rerun resumes."""
    dataset = read_shards(preprocessed, columns=["image_id", "image"]).map_batches(_decode, batch_format="numpy")
    spec = TeacherSpec(model=config.model, teacher=config.teacher, seed=config.seed, amp=config.resources.use_gpu)
    trainer = TorchTrainer(
        teacher_loop, train_loop_config={"spec": spec}, datasets={"train": dataset},
        scaling_config=scaling_config(config.resources),
        run_config=RunConfig(name=f"teacher-{key}", storage_path=storage_path(storage.join(out, "checkpoints")),
                             failure_config=FailureConfig(max_failures=config.resources.max_failures),
                             checkpoint_config=CheckpointConfig(num_to_keep=2)))
    return trainer.fit()


def _assignment_table(preprocessed: str, checkpoint_dir: Path) -> pd.DataFrame:
    with np.load(checkpoint_dir / "clusters.npz", allow_pickle=False) as saved:
        table = pd.DataFrame({"image_id": saved["image_ids"], "cluster": saved["assignments"],
                              "distance": saved["distances"]})
    labels = read_shards(preprocessed, columns=["image_id", "label", "origin", "lesion_id"]).to_pandas()
    return table.merge(labels, on="image_id", how="left")


def _montage(preprocessed: str, table: pd.DataFrame, path: Path, per_row: int = 12) -> None:
    """Thumbnails of the images nearest each centroid: what every cluster gathered."""
    chosen = table.sort_values("distance").groupby("cluster").head(per_row)
    wanted = set(chosen["image_id"])
    pixels = (read_shards(preprocessed, columns=["image_id", "image"])
              .filter(expr=ray.data.expressions.col("image_id").is_in(list(wanted))).to_pandas())
    chosen = chosen.merge(pixels, on="image_id")
    cluster_montage(list(decode_pngs(list(chosen["image"]))), chosen["cluster"].to_numpy(), list(chosen["label"]),
                    distances=chosen["distance"].to_numpy(), per_row=per_row, out_path=path,
                    title="Teacher clusters (nearest to each centroid)",
                    population=(table["cluster"].to_numpy(), list(table["label"])))


def _write_outputs(result: ray.train.Result, preprocessed: str, run_uri: str) -> dict:
    with result.checkpoint.as_directory() as folder, tempfile.TemporaryDirectory() as scratch:
        d, tmp = Path(folder), Path(scratch)
        state = torch.load(d / "model.pt", map_location="cpu", weights_only=True)
        table = _assignment_table(preprocessed, d)
        history = json.loads((d / "state.json").read_text())["history"]
        _montage(preprocessed, table, tmp / MONTAGE)
        buffer = io.BytesIO()
        torch.save(state, buffer)
        storage.write_bytes(storage.join(run_uri, WEIGHTS), buffer.getvalue())
        storage.write_bytes(storage.join(run_uri, ASSIGNMENTS), table.to_csv(index=False).encode())
        storage.write_bytes(storage.join(run_uri, HISTORY), pd.DataFrame(history).to_csv(index=False).encode())
        storage.write_bytes(storage.join(run_uri, MONTAGE), (tmp / MONTAGE).read_bytes())
    last = history[-1]
    return {"images": len(table), "clusters": int(table["cluster"].nunique()), "epochs": last["epoch"],
            "nmi_prev": last["nmi_prev"], "cluster_sizes": last["cluster_sizes"]}


def run_teacher(preprocessed: str, out: str, config: PipelineConfig) -> TeacherResult:
    """Train the metric teacher on published shards; a no-op where ``out`` holds this exact result."""
    preprocessed, out = storage.absolute(preprocessed), storage.absolute(out)
    key = teacher_key(require_publication(preprocessed), config)
    if (existing := reusable(out, key)) is not None:
        logger.info("%s already holds this teacher (config %s): nothing to do", out, key)
        return TeacherResult(existing, reused=True)
    result = fit_teacher(preprocessed, out, config, key)
    run = start_run(out)
    counts = _write_outputs(result, preprocessed, storage.join(out, run))
    extra = {"model": to_dict(config.model), "teacher": to_dict(config.teacher), "data": preprocessed}
    return TeacherResult(publish(out, run, key, counts, extra), reused=False)


def format_teacher(result: TeacherResult, factor_scores: dict[str, float] | None = None) -> str:
    counts = result.publication.counts
    sizes = " ".join(str(n) for n in counts["cluster_sizes"])
    lines = [f"teacher          {result.publication.out}" + ("  (reused)" if result.reused else ""),
             f"clusters         {counts['clusters']} over {counts['images']:,} images after {counts['epochs']} "
             f"epochs; sizes {sizes}; NMI to the previous epoch {counts['nmi_prev']:.3f}",
             f"montage          {result.uri(MONTAGE)}"]
    if factor_scores:
        lines.append("cluster NMI      " + "  ".join(f"{k} {v:.3f}" for k, v in factor_scores.items()))
    return "\n".join(lines)
