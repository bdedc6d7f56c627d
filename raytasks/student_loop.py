"""The student stage's worker side: what every Ray Train worker runs, and nothing the driver needs.

Each worker holds its shard of the train and validation splits in memory, then
trains the pending variants one after the other.  Each variant starts from the
same seeded initialisation (a paired comparison); each epoch trains on a seeded
permutation, validates on the gathered validation predictions, and rank 0
reports a checkpoint with the latest state and the best weights so far (by
``student.select_metric``).  When a variant ends, rank 0 writes its kept and
last weights and its history to the variant's ``final_dir`` for the driver to
publish.  A restarted run resumes at the variant and epoch it had reached.

Kept apart from the stage (``raytasks.student``) so that a worker imports what
it trains with (torch, torchvision, scikit-learn's metrics), not MLflow, the
stage machinery or the teacher's plots: 2.2 s instead of 3.3 s on 2 cores, and
``raytasks.worker.run_loop`` imports it while the worker's shard is read.
"""

from __future__ import annotations

import copy
import io
import json
import math
import time

import numpy as np
import ray.train
import torch

from raytasks.checkpoints import latest_state, load_weights, report_epoch, restore, unwrap
from raytasks.specs import StudentSpec
from raytasks.worker import InMemorySplit, Shard, equal_steps, start_worker, step_metrics
from skin_core import storage
from skin_core.classes import CLASSES
from skin_core.distributed import broadcast_from_root, gather_to_root
from skin_core.losses.attention_transfer import StudentObjective
from skin_core.metrics.classification import classification_report
from skin_core.models import create_model
from skin_core.models.bundle import LAST_WEIGHTS
from skin_core.training.schedule import scheduled
from skin_core.training.student import freeze, predict_probs, train_epoch

KEPT_FILE, HISTORY_FILE = "kept.pt", "history.json"  # in a variant's final_dir, beside LAST_WEIGHTS


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
        start, start_time = time.perf_counter(), time.time()
        stats = train_epoch(model, batches, objective, optimizer, device, teacher=teacher, generator=generator,
                            amp=spec.amp, augment=spec.augment)
        lr = optimizer.param_groups[0]["lr"]
        train_s = time.perf_counter() - start
        validation = _validate(model, val, device, spec.amp)
        metrics = {"variant": spec.variant, "epoch": epoch, "attempt_first_epoch": first, "lr": lr, **stats,
                   "start_time": start_time, "train_s": train_s, "val_s": time.perf_counter() - start - train_s,
                   **step_metrics(steps, spec.batch_size, train_s), **validation}
        if best_state is None or metrics[f"val_{s.select_metric}"] > best:
            best, best_state = metrics[f"val_{s.select_metric}"], copy.deepcopy(unwrap(model).state_dict())
        history = [*history, metrics]
        state = {"variant": spec.variant, "done": done, "epoch": epoch, "best": best, "history": history}
        report_epoch(metrics, model, optimizer, state, lambda folder: torch.save(best_state, folder / "best.pt"))
    _write_final(spec, best_state, unwrap(model).state_dict(), history)


def students_loop(loop_config: dict, shard: Shard) -> None:
    """Each pending variant's epochs, with a checkpoint each, on this worker's shard of both splits (run by
    ``raytasks.worker.run_loop``)."""
    specs: list[StudentSpec] = loop_config["specs"]
    device = start_worker(specs[0].threads, specs[0].seed)
    train, val = InMemorySplit.train_and_val(shard)
    done = list((latest_state() or {}).get("done", []))
    for spec in specs:
        if spec.variant not in done:
            _train_variant(spec, train, val, device, done)
            done.append(spec.variant)
