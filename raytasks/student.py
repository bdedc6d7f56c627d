"""The classification student on Ray Train: CE + attention transfer from the frozen teacher, or the baseline.

One loop serves both: a variant is ``baseline`` (β = 0, no teacher) or a set of
transfer layers (``layer3+layer4``).  Each epoch trains on the worker's shard
(``iter_torch_batches``), validates on the gathered validation predictions, and
rank 0 reports a checkpoint holding the latest state and the best weights so
far (by ``student.select_metric``); a restarted run resumes from it.
"""

from __future__ import annotations

import copy
import json
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import ray.train
import ray.train.torch
import torch
from ray.data.expressions import col
from ray.train import CheckpointConfig, FailureConfig, RunConfig
from ray.train.torch import TorchTrainer

from raytasks.checkpoints import report_epoch, unwrap
from raytasks.partition import PartitionResult
from raytasks.preprocess import read_shards
from raytasks.runtime import scaling_config, storage_path
from raytasks.teacher import WEIGHTS as TEACHER_WEIGHTS
from skin_core import storage
from skin_core.classes import CLASSES
from skin_core.config import ModelConfig, PipelineConfig, PreprocessConfig, StudentConfig, config_hash, to_dict
from skin_core.data.transforms import decode_pngs
from skin_core.distributed import broadcast_from_root, gather_to_root
from skin_core.losses.attention_transfer import StudentObjective
from skin_core.metrics.classification import classification_report
from skin_core.models import Backbone, check_transfer_layers
from skin_core.models.bundle import ModelCard, save_bundle
from skin_core.models.classifier import Classifier
from skin_core.publish import Publication, publish, require_publication, reusable, start_run
from skin_core.training.student import freeze, predict_probs, train_epoch

logger = logging.getLogger(__name__)

BASELINE = "baseline"
HISTORY = "history.csv"


def variant_layers(variant: str) -> tuple[str, ...]:
    """``baseline`` → (); ``layer3+layer4`` → ("layer3", "layer4")."""
    return () if variant == BASELINE else tuple(variant.split("+"))


@dataclass(frozen=True)
class StudentSpec:
    """What each worker needs to train one variant."""

    model: ModelConfig
    student: StudentConfig
    variant: str
    teacher_weights: str  # "" for the baseline
    teacher_arch: str
    teacher_embedding_dim: int
    class_weights: tuple[float, ...]
    seed: int
    amp: bool

    @property
    def layers(self) -> tuple[str, ...]:
        return variant_layers(self.variant)

    @property
    def beta(self) -> float:
        return 0.0 if self.variant == BASELINE else self.student.at_beta


@dataclass(frozen=True)
class StudentResult:
    variant: str
    publication: Publication
    reused: bool

    @property
    def folder(self) -> str:
        return self.publication.folder


# ---------------------------------------------------------------- worker side


def _restore(model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> tuple[int, float, list, dict | None]:
    """(first epoch, best metric, history, best weights) from the latest checkpoint."""
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is None:
        return 0, -math.inf, [], None
    with checkpoint.as_directory() as folder:
        d = Path(folder)
        model.load_state_dict(torch.load(d / "model.pt", map_location="cpu", weights_only=True))
        optimizer.load_state_dict(torch.load(d / "optimizer.pt", map_location="cpu", weights_only=True))
        best_state = torch.load(d / "best.pt", map_location="cpu", weights_only=True)
        state = json.loads((d / "state.json").read_text())
    logger.info("resuming the %s student after epoch %d", state.get("variant"), state["epoch"])
    return state["epoch"] + 1, state["best"], state["history"], best_state


def _validate(model: torch.nn.Module, shard: ray.data.DataIterator, device: torch.device, amp: bool) -> dict:
    """Validation metrics over every worker's shard (gathered on rank 0, shared back)."""
    probs, labels = [], []
    for batch in shard.iter_torch_batches(batch_size=128):
        probs.append(predict_probs(unwrap(model), batch["pixels"], device, amp=amp))
        labels.append(batch["label_idx"].numpy())
    parts = gather_to_root((np.concatenate(probs) if probs else np.zeros((0, len(CLASSES))),
                            np.concatenate(labels) if labels else np.zeros(0, int)))
    metrics = None
    if parts is not None:
        report = classification_report(np.concatenate([p[1] for p in parts]), np.concatenate([p[0] for p in parts]))
        metrics = {"val_accuracy": report.accuracy, "val_balanced_accuracy": report.balanced_accuracy,
                   "val_macro_f1": report.macro_f1}
    return broadcast_from_root(metrics)


def _report(metrics: dict, model, optimizer, best_state: dict, best: float, history: list, variant: str) -> None:
    state = {"epoch": metrics["epoch"], "best": best, "history": history, "variant": variant}
    report_epoch(metrics, model, optimizer, state, lambda folder: torch.save(best_state, folder / "best.pt"))


def _teacher(spec: StudentSpec, device: torch.device) -> torch.nn.Module | None:
    """The frozen teacher (not wrapped in DDP: it never trains), or None for the baseline."""
    if spec.beta == 0:
        return None
    teacher = Backbone(spec.teacher_arch, spec.teacher_embedding_dim, weights=spec.teacher_weights,
                       layers=spec.layers)
    return freeze(teacher).to(device)


def student_loop(loop_config: dict) -> None:
    """Ray Train worker function: shard → ``iter_torch_batches`` → step → ``report`` with a checkpoint."""
    spec: StudentSpec = loop_config["spec"]
    s = spec.student
    torch.manual_seed(spec.seed)
    device = ray.train.torch.get_device()
    model = Classifier(spec.model.arch, spec.model.weights, layers=spec.layers)
    optimizer = torch.optim.SGD(model.parameters(), lr=s.lr, momentum=0.9, weight_decay=1e-4)
    first, best, history, best_state = _restore(model, optimizer)
    model = ray.train.torch.prepare_model(model)
    teacher = _teacher(spec, device)
    weights = torch.tensor(spec.class_weights, device=device) if spec.class_weights else None
    objective = StudentObjective(spec.layers, beta=spec.beta, class_weights=weights)
    generator = torch.Generator().manual_seed(spec.seed)
    for epoch in range(first, s.epochs):
        for group in optimizer.param_groups:  # cosine decay, recomputed so a resumed run lands on the same lr
            group["lr"] = s.lr * 0.5 * (1 + math.cos(math.pi * epoch / s.epochs))
        batches = ((b["pixels"], b["label_idx"]) for b in ray.train.get_dataset_shard("train").iter_torch_batches(
            batch_size=s.batch_size, local_shuffle_buffer_size=4 * s.batch_size, local_shuffle_seed=spec.seed + epoch))
        start = time.perf_counter()
        stats = train_epoch(model, batches, objective, optimizer, device, teacher=teacher, generator=generator,
                            amp=spec.amp)
        metrics = {"epoch": epoch, "attempt_first_epoch": first, "lr": optimizer.param_groups[0]["lr"], **stats,
                   "train_s": time.perf_counter() - start,  # this worker's training time (benchmarks read it)
                   **_validate(model, ray.train.get_dataset_shard("val"), device, spec.amp)}
        if metrics[f"val_{s.select_metric}"] > best or best_state is None:
            best, best_state = metrics[f"val_{s.select_metric}"], copy.deepcopy(unwrap(model).state_dict())
        history = [*history, metrics]
        _report(metrics, model, optimizer, best_state, best, history, spec.variant)


# ---------------------------------------------------------------- driver side


def split_dataset(preprocessed: str, ids: list[str]) -> ray.data.Dataset:
    """Decoded images (``pixels``) and class indices of the given image ids."""
    return (read_shards(preprocessed, columns=["image_id", "image", "label_idx"])
            .filter(expr=col("image_id").is_in(ids))
            .map_batches(decode_labeled, batch_format="numpy"))


def decode_labeled(batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {"image_id": batch["image_id"], "pixels": decode_pngs(list(batch["image"])),
            "label_idx": batch["label_idx"].astype(np.int64)}


def class_weights(labels: pd.Series, mode: str) -> tuple[float, ...]:
    """Inverse-frequency weights (mean 1 over present classes) for ``weighted_ce``; () otherwise."""
    if mode == "none":
        return ()
    if mode != "weighted_ce":
        raise ValueError(f"student.imbalance: unknown mode {mode!r}; use none or weighted_ce")
    counts = labels.value_counts().reindex(list(CLASSES), fill_value=0).to_numpy(float)
    weights = np.where(counts > 0, counts.sum() / np.maximum(counts, 1) / len(CLASSES), 0.0)
    return tuple(float(w) for w in weights / weights[counts > 0].mean())


def student_settings(config: PipelineConfig) -> dict:
    """The student section without the variant list: adding a variant must not retrain the others."""
    return {k: v for k, v in to_dict(config.student).items() if k != "variants"}


def student_key(preprocessed: Publication, teacher: Publication | None, partition: Publication,
                config: PipelineConfig, variant: str) -> str:
    return config_hash({"data": preprocessed.config_hash, "teacher": teacher.config_hash if teacher else "",
                        "partition": partition.config_hash, "model": to_dict(config.model),
                        "student": student_settings(config), "variant": variant, "seed": config.seed})


def fit_student(preprocessed: str, splits: pd.DataFrame, out: str, spec: StudentSpec, config: PipelineConfig,
                key: str, callbacks: tuple = ()) -> ray.train.Result:
    # iter_torch_batches cannot make tensors of strings: the loop sees only pixels and labels
    datasets = {name: split_dataset(preprocessed, splits.loc[splits["split"] == name, "image_id"].tolist())
                .select_columns(["pixels", "label_idx"]) for name in ("train", "val")}
    trainer = TorchTrainer(
        student_loop, train_loop_config={"spec": spec}, datasets=datasets,
        scaling_config=scaling_config(config.resources),
        run_config=RunConfig(name=f"student-{key}", storage_path=storage_path(storage.join(out, "checkpoints")),
                             failure_config=FailureConfig(max_failures=config.resources.max_failures),
                             checkpoint_config=CheckpointConfig(num_to_keep=2), callbacks=list(callbacks)))
    return trainer.fit()


def run_student(preprocessed: str, teacher: str, partition: PartitionResult, out: str, config: PipelineConfig,
                variant: str, callbacks: tuple = ()) -> StudentResult:
    """Train one variant (``baseline`` or transfer layers) and publish its best weights and history.

    ``callbacks`` are Ray Train callbacks (a Tune trial passes ``TuneReportCallback``).
    """
    preprocessed, teacher, out = storage.absolute(preprocessed), storage.absolute(teacher), storage.absolute(out)
    check_transfer_layers(variant_layers(variant), config.preprocess.size)  # before any work is done
    teacher_pub = require_publication(teacher) if variant != BASELINE else None
    key = student_key(require_publication(preprocessed), teacher_pub, partition.publication, config, variant)
    if (existing := reusable(out, key)) is not None:
        return StudentResult(variant, existing, reused=True)
    splits = partition.table()
    spec = StudentSpec(
        model=config.model, student=config.student, variant=variant,
        teacher_weights=storage.join(teacher, teacher_pub.run, TEACHER_WEIGHTS) if teacher_pub else "",
        teacher_arch=config.model.arch, teacher_embedding_dim=config.model.embedding_dim,
        class_weights=class_weights(splits.loc[splits["split"] == "train", "label"], config.student.imbalance),
        seed=config.seed, amp=config.resources.use_gpu)
    result = fit_student(preprocessed, splits, out, spec, config, key, callbacks)
    return StudentResult(variant, _publish(result, out, key, variant, config.model.arch, config.preprocess), False)


def _publish(result: ray.train.Result, out: str, key: str, variant: str, arch: str,
             preprocess: PreprocessConfig) -> Publication:
    run = start_run(out)
    with result.checkpoint.as_directory() as folder:
        d = Path(folder)
        best = torch.load(d / "best.pt", map_location="cpu", weights_only=True)
        state = json.loads((d / "state.json").read_text())
    save_bundle(storage.join(out, run), best, ModelCard(arch, CLASSES, preprocess, variant))
    storage.write_bytes(storage.join(out, run, HISTORY), pd.DataFrame(state["history"]).to_csv(index=False).encode())
    return publish(out, run, key, {"epochs": state["epoch"] + 1, "best": state["best"]}, {"variant": variant})
