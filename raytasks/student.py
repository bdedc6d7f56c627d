"""The classification students on Ray Train: CE + attention transfer from the frozen teacher, or the baseline.

One loop serves every variant: ``baseline`` (β = 0, no teacher) or a set of
transfer layers (``layer3+layer4``).  All the variants still to train go
through ONE Ray Train run, one after the other, so the worker group starts and
the data is loaded and decoded once, not once per variant: each worker holds
its shard of the train and validation splits in memory.  Each variant starts
from the same seeded initialisation (a paired comparison); each epoch trains on
a seeded permutation, validates on the gathered validation predictions, and
rank 0 reports a checkpoint with the latest state and the best weights so far
(by ``student.select_metric``).  When a variant ends, rank 0 writes its kept and
last weights and its history to the variant's stage folder (``final/``); the
driver publishes each variant as its own stage.  A restarted run resumes at the
variant and epoch it had reached.
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
import logging
import math
import time
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import pandas as pd
import ray.train
import torch
from ray.data.expressions import col
from ray.train import CheckpointConfig, FailureConfig, RunConfig
from ray.train.torch import TorchTrainer

from raytasks.checkpoints import latest_state, load_weights, report_epoch, restore, unwrap
from raytasks.udfs import decode_labeled, decode_split
from raytasks.partition import PartitionSummary, splits
from raytasks.preprocess import PreprocessSummary, read_shards
from raytasks.progress import EpochProgress
from raytasks.runtime import WorkerPlan, storage_path, worker_plan
from raytasks.specs import StudentSpec
from raytasks.stages import Stage, StageContext, StageOutput, is_done, run_in, stage_tags
from raytasks.teacher import WEIGHTS as TEACHER_WEIGHTS
from raytasks.teacher import TeacherSummary
from raytasks.tracking import TrackedRun, finishing
from raytasks.worker import InMemorySplit, equal_steps, quiet, start_worker, step_metrics
from skin_core import storage
from skin_core.classes import CLASSES
from skin_core.config import PipelineConfig, StudentConfig, config_hash, flatten, to_dict
from skin_core.distributed import broadcast_from_root, gather_to_root
from skin_core.layers import LayerSet
from skin_core.losses.attention_transfer import StudentObjective
from skin_core.metrics.classification import classification_report
from skin_core.models import check_transfer_layers, create_model
from skin_core.models.bundle import LAST_WEIGHTS, WEIGHTS_FILE, ModelCard, save_bundle
from skin_core.training.schedule import scheduled
from skin_core.training.student import class_weights, freeze, predict_probs, train_epoch

logger = logging.getLogger(__name__)

HISTORY = "history.csv"
FINAL = "final"  # in a variant's stage folder: what rank 0 wrote when the variant ended, before publication
KEPT_FILE, HISTORY_FILE = "kept.pt", "history.json"


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


# ---------------------------------------------------------------- worker side


def _validate(model: torch.nn.Module, val: InMemorySplit, device: torch.device, amp: bool) -> dict:
    """Validation metrics over every worker's shard (gathered on rank 0, shared back)."""
    probs = predict_probs(unwrap(model), val.pixels, device, batch_size=128, amp=amp)
    parts = gather_to_root((probs.reshape(len(val), len(CLASSES)), val.labels.numpy()))
    metrics = None
    if parts is not None:
        report = classification_report(np.concatenate([p[1] for p in parts]), np.concatenate([p[0] for p in parts]))
        metrics = {"val_accuracy": report.accuracy, "val_balanced_accuracy": report.balanced_accuracy,
                   "val_macro_f1": report.macro_f1}
    return broadcast_from_root(metrics)


def _teacher(spec: StudentSpec, device: torch.device) -> torch.nn.Module | None:
    """The frozen teacher (not wrapped in DDP: it never trains), or None for the baseline."""
    if spec.beta == 0:
        return None
    teacher = create_model(spec.model, head="embedding", layers=spec.layers, weights=spec.teacher_weights)
    return freeze(teacher).to(device)


def _save(state: dict) -> bytes:
    buffer = io.BytesIO()
    torch.save(state, buffer)
    return buffer.getvalue()


def _write_final(spec: StudentSpec, kept: dict, last: dict, history: list[dict]) -> None:
    """Rank 0: the ended variant's kept and last weights and its history, for the driver to publish."""
    if ray.train.get_context().get_world_rank() != 0:
        return
    storage.write_bytes(storage.join(spec.final_dir, KEPT_FILE), _save(kept))
    storage.write_bytes(storage.join(spec.final_dir, LAST_WEIGHTS), _save(last))
    storage.write_bytes(storage.join(spec.final_dir, HISTORY_FILE), json.dumps(history).encode())


def _train_variant(spec: StudentSpec, train: InMemorySplit, val: InMemorySplit, device: torch.device,
                   done: list[str]) -> None:
    """Every epoch of one variant (from the checkpoint's epoch when this run was restarted in it)."""
    s = spec.student
    torch.manual_seed(spec.seed)  # every variant starts from the same weights: a paired comparison
    model = create_model(spec.model, head="classifier", layers=spec.layers)
    optimizer = torch.optim.SGD(model.parameters(), lr=s.lr, momentum=0.9, weight_decay=s.weight_decay, nesterov=True)
    state, best_state = None, None
    if (latest_state() or {}).get("variant") == spec.variant:
        state, best_state = restore(model, optimizer, lambda folder: load_weights(folder / "best.pt"))
    first, best, history = (0, -math.inf, []) if state is None else (state["epoch"] + 1, state["best"],
                                                                     state["history"])
    model = ray.train.torch.prepare_model(model)
    teacher = _teacher(spec, device)
    weights = torch.tensor(spec.class_weights, device=device) if spec.class_weights else None
    objective = StudentObjective(spec.layers, beta=spec.beta, class_weights=weights)
    steps = equal_steps(len(train), spec.batch_size)
    for epoch in range(first, s.epochs):
        generator = torch.Generator().manual_seed(spec.seed * 100_003 + epoch)  # the same batches after a resume
        batches = scheduled(train.batches(spec.batch_size, steps, generator), optimizer, epoch * steps,
                            s.epochs * steps, min(s.warmup_epochs * steps, s.epochs * steps - 1), s.lr)
        start = time.perf_counter()
        stats = train_epoch(model, batches, objective, optimizer, device, teacher=teacher, generator=generator,
                            amp=spec.amp, augment=spec.augment)
        lr = optimizer.param_groups[0]["lr"]
        train_s = time.perf_counter() - start
        validation = _validate(model, val, device, spec.amp)
        metrics = {"variant": spec.variant, "epoch": epoch, "attempt_first_epoch": first, "lr": lr, **stats,
                   "train_s": train_s, "val_s": time.perf_counter() - start - train_s,
                   **step_metrics(steps, spec.batch_size, train_s), **validation}
        if best_state is None or metrics[f"val_{s.select_metric}"] > best:
            best, best_state = metrics[f"val_{s.select_metric}"], copy.deepcopy(unwrap(model).state_dict())
        history = [*history, metrics]
        state = {"variant": spec.variant, "done": done, "epoch": epoch, "best": best, "history": history}
        report_epoch(metrics, model, optimizer, state, lambda folder: torch.save(best_state, folder / "best.pt"))
    _write_final(spec, best_state, unwrap(model).state_dict(), history)


def students_loop(loop_config: dict) -> None:
    """Ray Train worker function: shards in memory once, then each variant's epochs with a checkpoint each."""
    specs: list[StudentSpec] = loop_config["specs"]
    device = start_worker(specs[0].threads, specs[0].seed)
    train, val = InMemorySplit.train_and_val("train")
    done = list((latest_state() or {}).get("done", []))
    for spec in specs:
        if spec.variant not in done:
            _train_variant(spec, train, val, device, done)
            done.append(spec.variant)


# ---------------------------------------------------------------- driver side


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
            students_loop, train_loop_config={"specs": specs}, datasets={"train": quiet(dataset)},
            scaling_config=plan.scaling_config(),
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
