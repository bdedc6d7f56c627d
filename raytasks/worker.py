"""What every Ray Train worker does before its first step: its data shard in memory, the loop, threads and seed.

Both training stages run :func:`run_loop`, which starts reading the worker's
shard and imports the stage's loop module meanwhile.  Images are decoded once
per stage, not once per epoch: each worker pulls its shard through
``iter_batches`` into uint8 arrays, and the epochs index into them (a seeded
permutation per epoch).  At the sizes these stages train on
(10,000 images at 64–112 px is 120–380 MB of uint8) that is cheaper than
re-reading Parquet and decoding PNGs every epoch, and it leaves Ray Data idle,
so the worker can use every core of its node.
"""

from __future__ import annotations

import importlib
import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable

import numpy as np
import ray.data
import ray.train
import torch

from skin_core.distributed import all_min

logger = logging.getLogger(__name__)


def quiet(dataset: ray.data.Dataset) -> ray.data.Dataset:
    """A dataset for a training stage without Ray Data's progress bars: its split coordinator would print them
    line by line into the job's log; the stage's own one line per epoch says how far it is."""
    dataset.context.enable_progress_bars = False
    return dataset


Shard = dict[str, np.ndarray]  # one worker's rows of a dataset, every column as one array


def loop_ref(loop: Callable[[dict, Shard], None]) -> str:
    """``loop`` as ``run_loop`` finds it again in a worker (``module:function``)."""
    return f"{loop.__module__}:{loop.__qualname__}"


def run_loop(loop_config: dict) -> None:
    """Ray Train's worker function for every training stage: ``loop_config["loop"]`` (a :func:`loop_ref`) on
    this worker's shard of the ``train`` dataset.

    A worker unpickles its function before it runs it, so were that the stage's
    loop, its imports (torchvision, scikit-learn, faiss: about 2 s on 2 cores)
    would all come before Ray Data starts reading.  This module needs nothing the
    worker has not loaded already; the shard is read in a thread while the loop's
    module is imported, so the decoding runs on the other cores meanwhile.
    """
    with ThreadPoolExecutor(1, thread_name_prefix="shard") as reader:
        shard = reader.submit(load_shard, "train")
        module, name = loop_config["loop"].split(":")
        loop = getattr(importlib.import_module(module), name)
        rows = shard.result()
    loop(loop_config, rows)


def start_worker(threads: int, seed: int) -> torch.device:
    """Torch threads and seed for this worker; returns its device."""
    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    return ray.train.torch.get_device()


def load_shard(name: str, batch_size: int = 512) -> Shard:
    """This worker's shard of dataset ``name``, every column as one array."""
    columns: dict[str, list[np.ndarray]] = {}
    shard = ray.train.get_dataset_shard(name)
    for batch in shard.iter_batches(batch_size=batch_size, batch_format="numpy"):
        for key, values in batch.items():
            columns.setdefault(key, []).append(values)
    return {key: np.concatenate(parts) for key, parts in columns.items()}


@dataclass(frozen=True)
class InMemorySplit:
    """Decoded images (uint8 N×H×W×3) and class indices held by one worker."""

    pixels: torch.Tensor
    labels: torch.Tensor

    @staticmethod
    def of(data: Shard, rows: np.ndarray) -> "InMemorySplit":
        return InMemorySplit(torch.from_numpy(np.ascontiguousarray(data["pixels"][rows])),
                             torch.from_numpy(data["label_idx"][rows].astype(np.int64)))

    @staticmethod
    def train_and_val(data: Shard) -> tuple["InMemorySplit", "InMemorySplit"]:
        """A worker's shard of a dataset holding both splits, told apart by its ``is_val`` column."""
        if not data:
            empty = InMemorySplit(torch.zeros((0, 1, 1, 3), dtype=torch.uint8), torch.zeros(0, dtype=torch.int64))
            return empty, empty
        return InMemorySplit.of(data, ~data["is_val"]), InMemorySplit.of(data, data["is_val"])

    def __len__(self) -> int:
        return len(self.labels)

    def batches(self, batch_size: int, steps: int, generator: torch.Generator):
        """``steps`` batches of a fresh permutation (DDP ranks must take the same number of steps)."""
        order = torch.randperm(len(self), generator=generator)
        for start in range(0, steps * batch_size, batch_size):
            index = order[start:start + batch_size]
            yield self.pixels[index], self.labels[index]


def equal_steps(count: int, batch_size: int) -> int:
    """Full batches per epoch that every rank can take: the smallest shard decides."""
    return max(1, all_min(count) // batch_size)


def step_metrics(steps: int, batch_size: int, train_s: float) -> dict[str, float]:
    """What one epoch's optimisation was, whatever the worker plan: the ranks, the steps each took, the global
    batch (this rank's times the world size) and the images per second over all ranks."""
    world = ray.train.get_context().get_world_size()
    return {"world_size": world, "steps": steps, "global_batch": batch_size * world,
            "images_per_s": steps * batch_size * world / train_s}
