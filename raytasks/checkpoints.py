"""Per-epoch Ray Train reports with a checkpoint, shared by the teacher and student loops."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Callable

import ray.train
import torch


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The model inside a DDP wrapper (or the model itself in one process)."""
    return getattr(model, "module", model)


def report_epoch(metrics: dict, model: torch.nn.Module, optimizer: torch.optim.Optimizer, state: dict,
                 extra: Callable[[Path], None] = lambda folder: None) -> None:
    """Every rank reports (Ray Train needs all of them); rank 0 attaches the checkpoint.

    The checkpoint holds ``model.pt``, ``optimizer.pt``, ``state.json`` (``state``)
    and whatever ``extra`` writes into the folder.
    """
    if ray.train.get_context().get_world_rank() != 0:
        ray.train.report(metrics, checkpoint=None)
        return
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch)
        torch.save(unwrap(model).state_dict(), folder / "model.pt")
        torch.save(optimizer.state_dict(), folder / "optimizer.pt")
        (folder / "state.json").write_text(json.dumps(state))
        extra(folder)
        ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(scratch))
