"""Per-epoch Ray Train reports with a checkpoint, and the restore that mirrors them, for every training loop."""

from __future__ import annotations

import json
import logging
import tempfile
from pathlib import Path
from typing import Any, Callable

import ray.train
import torch

logger = logging.getLogger(__name__)

MODEL, OPTIMIZER, STATE = "model.pt", "optimizer.pt", "state.json"


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The model inside a DDP wrapper (or the model itself in one process)."""
    return getattr(model, "module", model)


def report_epoch(metrics: dict, model: torch.nn.Module, optimizer: torch.optim.Optimizer, state: dict,
                 extra: Callable[[Path], None] = lambda folder: None) -> None:
    """Every rank reports (Ray Train needs all of them); rank 0 attaches the checkpoint.

    The checkpoint holds ``model.pt``, ``optimizer.pt``, ``state.json`` (``state``)
    and whatever ``extra`` writes into the folder; :func:`restore` reads it back.
    """
    if ray.train.get_context().get_world_rank() != 0:
        ray.train.report(metrics, checkpoint=None)
        return
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch)
        torch.save(unwrap(model).state_dict(), folder / MODEL)
        torch.save(optimizer.state_dict(), folder / OPTIMIZER)
        (folder / STATE).write_text(json.dumps(state))
        extra(folder)
        ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(scratch))


def load_weights(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


def latest_state() -> dict | None:
    """The ``state`` of the latest checkpoint of this run, or None when it starts fresh."""
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is None:
        return None
    with checkpoint.as_directory() as folder:
        return json.loads((Path(folder) / STATE).read_text())


def restore(model: torch.nn.Module, optimizer: torch.optim.Optimizer,
            extra: Callable[[Path], Any] = lambda folder: None) -> tuple[dict | None, Any]:
    """Load the latest checkpoint into ``model`` and ``optimizer``: (its state, what ``extra`` read).

    ``(None, None)`` when the run starts fresh.
    """
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is None:
        return None, None
    with checkpoint.as_directory() as folder:
        d = Path(folder)
        unwrap(model).load_state_dict(load_weights(d / MODEL))
        optimizer.load_state_dict(load_weights(d / OPTIMIZER))
        state = json.loads((d / STATE).read_text())
        rest = extra(d)
    logger.info("resuming after epoch %d", state["epoch"])
    return state, rest


def final_state(result: ray.train.Result, extra: Callable[[Path], Any] = lambda folder: None) -> tuple[dict, Any]:
    """The driver's view of a finished fit: the last checkpoint's state and what ``extra`` read from it."""
    with result.checkpoint.as_directory() as folder:
        d = Path(folder)
        return json.loads((d / STATE).read_text()), extra(d)
