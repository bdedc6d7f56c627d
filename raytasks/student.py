"""The classification students on Ray Train: CE + attention transfer from the frozen teacher, or the baseline.

One loop (``raytasks.student_loop``) serves every variant: ``baseline`` (β = 0,
no teacher) or a set of transfer layers (``layer3+layer4``).  All the variants
still to train go through ONE Ray Train run, one after the other, so the worker
group starts and the data is loaded and decoded once, not once per variant.
This module is the driver's side: the dataset, the fit, and each variant
published as its own stage from what rank 0 wrote when the variant ended.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
from dataclasses import dataclass
from typing import Sequence

import pandas as pd
import ray.data
import torch
from ray.data.expressions import col
from ray.train import CheckpointConfig, FailureConfig, RunConfig
from ray.train.torch import TorchTrainer

from raytasks.udfs import decode_labeled, decode_split
from raytasks.partition import PartitionSummary, splits
from raytasks.preprocess import PreprocessSummary, read_shards
from raytasks.progress import EpochProgress
from raytasks.runtime import WorkerPlan, storage_path, worker_plan
from raytasks.specs import StudentSpec
from raytasks.stages import Stage, StageContext, StageOutput, is_done, run_in, stage_tags
from raytasks.student_loop import HISTORY_FILE, KEPT_FILE, students_loop
from raytasks.teacher import WEIGHTS as TEACHER_WEIGHTS
from raytasks.teacher import TeacherSummary
from raytasks.tracking import TrackedRun, finishing
from raytasks.worker import loop_ref, quiet, run_loop
from skin_core import storage
from skin_core.classes import CLASSES
from skin_core.config import PipelineConfig, StudentConfig, config_hash, flatten, to_dict
from skin_core.layers import LayerSet
from skin_core.models import check_transfer_layers
from skin_core.models.bundle import LAST_WEIGHTS, WEIGHTS_FILE, ModelCard, save_bundle
from skin_core.training.student import class_weights

logger = logging.getLogger(__name__)

HISTORY = "history.csv"
FINAL = "final"  # in a variant's stage folder: what rank 0 wrote when the variant ended, before publication


@dataclass(frozen=True)
class StudentSummary:
    """The kept epoch (by ``student.select_metric`` on validation) and the last one."""

    variant: str
    epochs: int
    best: float  # the validation metric of the kept epoch
    best_epoch: int
    last: float  # the validation metric of the last epoch
    val_split: str = "val"  # the split those metrics are on: the partition's val, or the sweep's ranking hold-out
    val_rows: str = ""  # hash of that split's image ids: two students with the same hash were scored on the same rows


def split_dataset(preprocessed: StageOutput[PreprocessSummary], ids: list[str]) -> ray.data.Dataset:
    """Decoded images (``pixels``) and class indices of the given image ids."""
    return (read_shards(preprocessed, columns=["image_id", "image", "label_idx"])
            .filter(expr=col("image_id").is_in(ids))
            .map_batches(decode_labeled, batch_format="numpy"))


def rows_hash(image_ids: list[str]) -> str:
    """A short hash of a set of image ids: equal hashes mean the same rows."""
    return config_hash(sorted(image_ids))


def validation_ids(table: pd.DataFrame, student: StudentConfig) -> list[str]:
    """The image ids that pick the kept epoch (and feed Tune's ranking): ``student.val_split`` of the partition."""
    ids = table.loc[table["split"] == student.val_split, "image_id"].tolist()
    if not ids:
        raise ValueError(f"the partition has no {student.val_split!r} rows to validate on (student.val_split)")
    return ids


def student_settings(config: PipelineConfig) -> dict:
    """The student section without the variant list: adding a variant must not retrain the others."""
    return {k: v for k, v in to_dict(config.student).items() if k != "variants"}


def student_inputs(preprocessed: StageOutput, teacher: StageOutput, partition: StageOutput, config: PipelineConfig,
                   variant: LayerSet) -> dict:
    """What decides one variant's weights (the variant list is left out: adding one retrains no other)."""
    return {"data": preprocessed.key, "teacher": "" if variant.is_baseline else teacher.key,
            "partition": partition.key, "model": to_dict(config.model), "student": student_settings(config),
            "augment": to_dict(config.augment), "variant": variant.name, "seed": config.seed}


class StudentsFit:
    """One Ray Train run for every variant still to train, started when the first of them is published."""

    def __init__(self, preprocessed: StageOutput, teacher: StageOutput, partition: StageOutput,
                 config: PipelineConfig, callbacks: tuple = ()) -> None:
        self.preprocessed, self.teacher, self.partition, self.config = preprocessed, teacher, partition, config
        self.callbacks = callbacks
        self.pending: dict[str, tuple[str, TrackedRun]] = {}  # variant → (its stage folder, its MLflow run)
        self.trained = False

    def add(self, variant: str, out: str, run: TrackedRun) -> None:
        self.pending[variant] = (out, run)

    def _specs(self, plan: WorkerPlan) -> list[StudentSpec]:
        c, table = self.config, splits(self.partition)
        weights = class_weights(table.loc[table["split"] == "train", "label"], c.student.imbalance)
        teacher_weights = self.teacher.file(TEACHER_WEIGHTS)
        return [StudentSpec(model=c.model, student=c.student, augment=c.augment, variant=variant,
                            teacher_weights="" if LayerSet.parse(variant).is_baseline else teacher_weights,
                            class_weights=weights, seed=c.seed, amp=plan.use_gpu, threads=plan.threads,
                            batch_size=max(1, c.student.batch_size // plan.num_workers),
                            final_dir=storage.join(out, FINAL))
                for variant, (out, _) in self.pending.items()]

    def _fit(self) -> None:
        plan, table = worker_plan(self.config.resources), splits(self.partition)
        # one pass over both splits (one Ray Data pipeline to start, not two); the worker tells them apart
        used = table[table["split"].isin(["train", self.config.student.val_split])]
        dataset = (read_shards(self.preprocessed, columns=["image_id", "image", "label_idx"])
                   .filter(expr=col("image_id").is_in(used["image_id"].tolist()))
                   .map_batches(decode_split, batch_format="numpy",
                                fn_kwargs={"val_ids": frozenset(validation_ids(table, self.config.student))}))
        specs = self._specs(plan)
        name = "students-" + config_hash([s.final_dir for s in specs])[:12]  # the same pending set resumes
        first_folder = next(iter(self.pending.values()))[0]
        progress = EpochProgress(self.config.student.epochs,
                                 {v: (f"student:{v}", run) for v, (_, run) in self.pending.items()}, "variant")
        TorchTrainer(
            run_loop, train_loop_config={"loop": loop_ref(students_loop), "specs": specs},
            datasets={"train": quiet(dataset)},
            scaling_config=plan.scaling_config(), dataset_config=plan.data_config(),
            run_config=RunConfig(name=name, storage_path=storage_path(storage.join(first_folder, "checkpoints")),
                                 failure_config=FailureConfig(max_failures=self.config.resources.max_failures),
                                 checkpoint_config=CheckpointConfig(num_to_keep=2),
                                 callbacks=[progress, *self.callbacks])).fit()
        self.trained = True

    def publish(self, variant: str, context: StageContext) -> StudentSummary:
        """The variant's stage files from what rank 0 wrote when it ended (training everything first if needed)."""
        if not self.trained:
            self._fit()
        final = storage.join(self.pending[variant][0], FINAL)
        history = pd.DataFrame(json.loads(storage.read_bytes(storage.join(final, HISTORY_FILE))))
        kept = torch.load(io.BytesIO(storage.read_bytes(storage.join(final, KEPT_FILE))), map_location="cpu",
                          weights_only=True)
        save_bundle(context.run_uri, kept, ModelCard(self.config.model.arch, CLASSES, self.config.preprocess, variant))
        context.write_bytes(LAST_WEIGHTS, storage.read_bytes(storage.join(final, LAST_WEIGHTS)))
        context.write_csv(HISTORY, history)
        s = self.config.student
        metric = history[f"val_{s.select_metric}"]
        return StudentSummary(variant=variant, epochs=len(history), best=float(metric.max()),
                              best_epoch=int(history.loc[metric.idxmax(), "epoch"]), last=float(metric.iloc[-1]),
                              val_split=s.val_split, val_rows=rows_hash(validation_ids(splits(self.partition), s)))


def student_stage(preprocessed: StageOutput[PreprocessSummary], teacher: StageOutput[TeacherSummary],
                  partition: StageOutput[PartitionSummary], config: PipelineConfig, variant: str,
                  fit: StudentsFit) -> Stage[StudentSummary]:
    """One variant (``baseline`` or transfer layers), trained by ``fit`` together with the other pending ones."""
    layers = LayerSet.parse(variant)
    check_transfer_layers(layers.layers, config.preprocess.size)  # before any work is done
    params = {**flatten({"model": to_dict(config.model), "student": student_settings(config),
                         "augment": to_dict(config.augment)}), "student.variant": layers.name, "seed": config.seed}
    return Stage("student", student_inputs(preprocessed, teacher, partition, config, layers), StudentSummary,
                 lambda context: fit.publish(layers.name, context), name=f"student:{layers.name}", params=params,
                 history=HISTORY, exclude=(WEIGHTS_FILE, LAST_WEIGHTS))


def train_students(preprocessed: StageOutput[PreprocessSummary], teacher: StageOutput[TeacherSummary],
                   partition: StageOutput[PartitionSummary], config: PipelineConfig, variants: Sequence[str],
                   tracker: TrackedRun, callbacks: tuple = (), folders: Sequence[str] | None = None
                   ) -> list[StageOutput[StudentSummary]]:
    """Every variant, each published as its own stage; those not yet done train in one fit.

    Folders default to each stage's under ``config.out``.  ``callbacks`` are Ray
    Train callbacks (a Tune trial passes its reporter).  Each variant's MLflow run
    exists from the start, so the fit logs every epoch live.
    """
    fit = StudentsFit(preprocessed, teacher, partition, config, callbacks)
    stages = [student_stage(preprocessed, teacher, partition, config, v, fit) for v in variants]
    folders = [stage.folder_in(config.out) for stage in stages] if folders is None else folders
    with contextlib.ExitStack() as runs:  # every run ends FINISHED, or FAILED if anything raises
        opened = [runs.enter_context(finishing(tracker.child(stage.label, stage_tags(stage, out))))
                  for stage, out in zip(stages, folders)]
        for stage, out, run in zip(stages, folders, opened):
            if not is_done(stage, out):
                fit.add(LayerSet.parse(stage.inputs["variant"]).name, storage.absolute(out), run)
        return [run_in(stage, out, run) for stage, out, run in zip(stages, folders, opened)]
