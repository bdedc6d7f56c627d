"""The metric teacher on Ray Train: DeepCluster with the Multi-Similarity loss, DDP across workers.

Each epoch every worker extracts features for its shard, rank 0 gathers them,
runs k-means and measures the features against the labels (k-NN accuracy from
the other lesions to a fixed lesion hold-out, cluster purity and NMI: labels
evaluate, they never train), the pseudo-labels go back, and one epoch of
MS-loss training follows (uniform over clusters).  Epoch 0 clusters the
initial network, so its figures are those of the untrained architecture (random
init, or the pretrained weights): the baseline a teacher must beat to transfer
anything useful.  Rank 0 reports a checkpoint each epoch; a restarted worker
group (``FailureConfig.max_failures``) or a re-submitted driver (same ``name``
and ``storage_path``) resumes from the latest one.  The published outputs are
the teacher weights, the cluster assignment table, the per-epoch history and
the cluster montage with its numbers (``cluster_montage.csv``: which image is
shown in which cluster's row, at which rank and centroid distance).  This module
is the driver's side; the workers run ``raytasks.teacher_loop``.
"""

from __future__ import annotations

import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import ray.data
import ray.train
from ray.data.expressions import col
from ray.train import CheckpointConfig, FailureConfig, RunConfig
from ray.train.torch import TorchTrainer

from raytasks.checkpoints import final_state
from raytasks.udfs import decode_for_teacher
from raytasks.preprocess import PreprocessSummary, read_shards, read_table
from raytasks.progress import EpochProgress
from raytasks.runtime import WorkerPlan, storage_path, worker_plan
from raytasks.specs import TeacherSpec
from raytasks.stages import Stage, StageContext, StageOutput
from raytasks.teacher_loop import read_clusters, teacher_loop
from raytasks.worker import loop_ref, quiet, run_loop
from skin_core.config import ModelConfig, PipelineConfig, flatten, to_dict
from skin_core.preprocessing.pipeline import decode_pngs
from skin_core.publish import PublishError
from skin_core.plots.montage import cluster_montage

logger = logging.getLogger(__name__)

WEIGHTS, ASSIGNMENTS, HISTORY, MONTAGE = "teacher.pt", "assignments.csv", "history.csv", "cluster_montage.png"
MONTAGE_TABLE = "cluster_montage.csv"  # the montage's numbers: which image sits where
MONTAGE_PER_ROW = 12


@dataclass(frozen=True)
class TeacherSummary:
    """The teacher after its last epoch, and its feature quality against the untrained network's."""

    images: int
    clusters: int
    epochs: int
    nmi_prev: float  # NMI between the last two clusterings: has DeepCluster settled?
    cluster_sizes: tuple[int, ...]
    knn_accuracy: float = float("nan")
    knn_balanced_accuracy: float = float("nan")
    knn_init_accuracy: float = float("nan")  # the same architecture before training (epoch 0's features)
    knn_init_balanced_accuracy: float = float("nan")
    purity: float = float("nan")
    nmi_label: float = float("nan")


def clustered_images(preprocessed: StageOutput[PreprocessSummary], origins: tuple[str, ...]) -> ray.data.Dataset:
    """The images the teacher clusters and trains on: those of ``origins`` (every origin when empty)."""
    columns = ["image_id", "image", "label_idx", "lesion_id"]
    if not origins:
        return read_shards(preprocessed, columns=columns)
    return read_shards(preprocessed, columns=[*columns, "origin"]).filter(
        expr=col("origin").is_in(list(origins))).select_columns(columns)


def fit_teacher(preprocessed: StageOutput[PreprocessSummary], context: StageContext, config: PipelineConfig,
                plan: WorkerPlan) -> ray.train.Result:
    """Run the Ray Train job; checkpoints live under the stage folder's ``checkpoints`` so a rerun resumes."""
    dataset = quiet(clustered_images(preprocessed, config.teacher.origins)
                    .map_batches(decode_for_teacher, batch_format="numpy"))
    spec = TeacherSpec(model=config.model, teacher=config.teacher, seed=config.seed, amp=plan.use_gpu,
                       threads=plan.threads, batch_size=max(2, config.teacher.batch_size // plan.num_workers))
    trainer = TorchTrainer(
        run_loop, train_loop_config={"loop": loop_ref(teacher_loop), "spec": spec}, datasets={"train": dataset},
        scaling_config=plan.scaling_config(), dataset_config=plan.data_config(),
        run_config=RunConfig(name=f"teacher-{context.key}", storage_path=storage_path(f"{context.out}/checkpoints"),
                             failure_config=FailureConfig(max_failures=config.resources.max_failures),
                             checkpoint_config=CheckpointConfig(num_to_keep=2),
                             callbacks=[EpochProgress(config.teacher.epochs + 1, {"": ("teacher", context.tracker)})]))
    return trainer.fit()


def _assignment_table(preprocessed: StageOutput, clusters: dict) -> pd.DataFrame:
    table = pd.DataFrame({"image_id": clusters["image_ids"], "cluster": clusters["assignments"],
                          "distance": clusters["distances"]})
    labels = read_table(preprocessed, columns=["image_id", "label", "origin", "lesion_id"])
    return table.merge(labels, on="image_id", how="left")


def montage_members(table: pd.DataFrame, per_row: int = MONTAGE_PER_ROW) -> pd.DataFrame:
    """The images the montage shows: each cluster's ``per_row`` nearest its centroid, ``rank`` 0 the nearest."""
    chosen = table.sort_values(["cluster", "distance"], kind="stable").groupby("cluster").head(per_row)
    chosen = chosen.assign(rank=chosen.groupby("cluster").cumcount())
    return chosen[["image_id", "cluster", "rank", "distance", "label"]].reset_index(drop=True)


def _montage(preprocessed: StageOutput, members: pd.DataFrame, table: pd.DataFrame,
             per_row: int = MONTAGE_PER_ROW) -> bytes:
    """Thumbnails of ``members`` (``montage_members``): what every cluster gathered (PNG bytes)."""
    pixels = read_table(preprocessed, columns=["image_id", "image"], image_ids=members["image_id"].tolist())
    chosen = members.merge(pixels, on="image_id")
    with tempfile.TemporaryDirectory() as scratch:
        path = Path(scratch) / MONTAGE
        cluster_montage(list(decode_pngs(list(chosen["image"]))), chosen["cluster"].to_numpy(),
                        list(chosen["label"]), distances=chosen["distance"].to_numpy(), per_row=per_row,
                        out_path=path, title="Teacher clusters (nearest to each centroid)",
                        population=(table["cluster"].to_numpy(), list(table["label"])))
        return path.read_bytes()


def summarize(history: list[dict], table: pd.DataFrame) -> TeacherSummary:
    """The last epoch's clustering and quality, beside epoch 0's (the untrained network)."""
    first, last = history[0], history[-1]
    nan = float("nan")
    return TeacherSummary(
        images=len(table), clusters=int(table["cluster"].nunique()), epochs=int(last["epoch"]),
        nmi_prev=float(last["nmi_prev"]), cluster_sizes=tuple(int(n) for n in last["cluster_sizes"]),
        knn_accuracy=last.get("knn_accuracy", nan), knn_balanced_accuracy=last.get("knn_balanced_accuracy", nan),
        knn_init_accuracy=first.get("knn_accuracy", nan),
        knn_init_balanced_accuracy=first.get("knn_balanced_accuracy", nan),
        purity=last.get("purity", nan), nmi_label=last.get("nmi_label", nan))


def _write_outputs(result: ray.train.Result, preprocessed: StageOutput, context: StageContext) -> TeacherSummary:
    def weights_and_clusters(folder: Path) -> tuple[bytes, dict]:
        return (folder / "model.pt").read_bytes(), read_clusters(folder)

    state, (weights, clusters) = final_state(result, weights_and_clusters)
    table = _assignment_table(preprocessed, clusters)
    history = state["history"]
    context.write_bytes(WEIGHTS, weights)  # the backbone's state dict, saved by report_epoch
    context.write_csv(ASSIGNMENTS, table)
    context.write_csv(HISTORY, pd.DataFrame(history))
    members = montage_members(table)
    context.write_csv(MONTAGE_TABLE, members)
    context.write_bytes(MONTAGE, _montage(preprocessed, members, table))
    return summarize(history, table)


def teacher_stage(preprocessed: StageOutput[PreprocessSummary], config: PipelineConfig) -> Stage[TeacherSummary]:
    """The teacher stage: shared by every config with the same data, model, teacher settings and seed."""
    inputs = {"data": preprocessed.key, "model": to_dict(config.model), "teacher": to_dict(config.teacher),
              "seed": config.seed}

    def write(context: StageContext) -> TeacherSummary:
        result = fit_teacher(preprocessed, context, config, worker_plan(config.resources))
        return _write_outputs(result, preprocessed, context)

    params = flatten({"model": to_dict(config.model), "teacher": to_dict(config.teacher), "seed": config.seed})
    return Stage("teacher", inputs, TeacherSummary, write, params=params, history=HISTORY)


def teacher_model(teacher: StageOutput[TeacherSummary]) -> ModelConfig:
    """The trained teacher's network settings (arch, embedding size), as its completion marker records them.

    The stage's inputs, written into the marker, are what decided ``teacher.pt``;
    so the network to load the weights into needs no second copy beside them.
    """
    recorded = teacher.publication.extra.get("inputs", {}).get("model")
    if recorded is None:
        raise PublishError(f"{teacher.out}: its completion marker records no model settings; "
                           "not a teacher stage output")
    return ModelConfig(**recorded)


def format_teacher(result: StageOutput[TeacherSummary], factor_scores: dict[str, float] | None = None) -> str:
    s = result.summary
    sizes = " ".join(str(n) for n in s.cluster_sizes)
    lines = [f"teacher          {result.out}" + ("  (reused)" if result.reused else ""),
             f"clusters         {s.clusters} over {s.images:,} images after {s.epochs} epochs; sizes {sizes}; "
             f"NMI to the previous epoch {s.nmi_prev:.3f}",
             f"k-NN (k=20)      balanced accuracy {s.knn_balanced_accuracy:.3f} (untrained network "
             f"{s.knn_init_balanced_accuracy:.3f}); accuracy {s.knn_accuracy:.3f} ({s.knn_init_accuracy:.3f}); "
             f"cluster purity {s.purity:.3f}, NMI to labels {s.nmi_label:.3f}",
             f"montage          {result.file(MONTAGE)}"]
    if factor_scores:
        lines.append("cluster NMI      " + "  ".join(f"{k} {v:.3f}" for k, v in factor_scores.items()))
    return "\n".join(lines)
