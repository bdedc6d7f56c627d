"""Benchmark: the student's training throughput on Ray Train against a plain PyTorch loop.

Runs the real stages on a synthetic set (a 1-epoch teacher, the partition, then
``run_student``).  Two Ray figures: the in-loop throughput (train images ×
epochs / the ``train_s`` each epoch records: DDP steps fed by Ray Data) and the
whole fit's wall time (adds Ray Train start-up, per-epoch validation,
checkpoints and publishing).  The plain loop trains the same model and
objective with ``train_epoch`` in one process on the same train images (decoded
once, untimed), at the same global batch (Ray's is per worker × workers) and
with as many torch threads as the Ray workers have in total.  With ``--gpu``
(one GPU per worker, AMP) Ray's in-loop images/s per GPU is reported too.

    python jobs/benchmarks/student.py --n 600 --size 64 --epochs 2
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import NamedTuple

import ray
import torch

from raytasks.partition import PartitionResult, run_partition
from raytasks.preprocess import run_preprocess
from raytasks.runtime import init_ray
from raytasks.student import BASELINE, HISTORY, run_student, split_dataset, variant_layers
from raytasks.teacher import WEIGHTS, TeacherResult, run_teacher
from skin_core import storage
from skin_core.config import PipelineConfig, from_dict
from skin_core.losses.attention_transfer import StudentObjective
from skin_core.models import Backbone
from skin_core.models.classifier import Classifier
from skin_core.synth import generate_dataset
from skin_core.training.student import freeze, train_epoch

if __package__:  # imported as benchmarks.student by jobs/benchmark.py
    from .table import print_rows, row
else:  # run as a script
    from table import print_rows, row

NAME = "student"


def pipeline_config(root: Path, args: argparse.Namespace) -> PipelineConfig:
    return from_dict(PipelineConfig, {
        "out": str(root), "preprocess": {"size": args.size}, "model": {"arch": "resnet18", "embedding_dim": 64},
        "teacher": {"epochs": 1, "clusters": 16, "pca_dim": 64, "batch_size": args.batch_size},
        "student": {"epochs": args.epochs, "batch_size": args.batch_size},
        "resources": {"num_workers": args.workers, "cpus_per_worker": args.cpus_per_worker,
                      "use_gpu": args.gpu, "data_cpus": 1.0}})


@ray.remote
def _threads() -> int:
    return torch.get_num_threads()


def worker_threads(cpus: float) -> int:
    """torch threads a Ray worker with ``cpus`` CPUs gets (Ray sets OMP_NUM_THREADS from its CPUs)."""
    return ray.get(_threads.options(num_cpus=cpus).remote())


def load_train(preprocessed: str, ids: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    batch = split_dataset(preprocessed, ids).select_columns(["pixels", "label_idx"]).take_batch(len(ids))
    return torch.tensor(batch["pixels"]), torch.tensor(batch["label_idx"])  # copies: Ray's arrays are read-only


def shuffled(pixels: torch.Tensor, labels: torch.Tensor, batch_size: int, generator: torch.Generator):
    order = torch.randperm(len(labels), generator=generator)
    for start in range(0, len(order), batch_size):
        index = order[start:start + batch_size]
        yield pixels[index], labels[index]


def time_plain(pixels, labels, config: PipelineConfig, variant: str, teacher_weights: str) -> float:
    """Seconds for ``student.epochs`` epochs of ``train_epoch`` in this process."""
    torch.manual_seed(config.seed)
    device = torch.device("cuda" if config.resources.use_gpu else "cpu")
    layers, s = variant_layers(variant), config.student
    model = Classifier(config.model.arch, config.model.weights, layers=layers).to(device)
    teacher = None if variant == BASELINE else freeze(Backbone(
        config.model.arch, config.model.embedding_dim, weights=teacher_weights, layers=layers)).to(device)
    objective = StudentObjective(layers, beta=0.0 if variant == BASELINE else s.at_beta)
    optimizer = torch.optim.SGD(model.parameters(), lr=s.lr, momentum=0.9, weight_decay=1e-4)
    generator = torch.Generator().manual_seed(config.seed)
    start = time.perf_counter()
    for _ in range(s.epochs):
        train_epoch(model, shuffled(pixels, labels, s.batch_size, generator), objective, optimizer, device,
                    teacher=teacher, generator=generator, amp=config.resources.use_gpu)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=600)
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--variant", default=BASELINE, help="baseline or layers such as layer3+layer4")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--cpus-per-worker", type=float, default=0.5)
    p.add_argument("--gpu", action="store_true")
    return p


class Timings(NamedTuple):
    train_images: int
    threads: int  # torch threads of the plain loop: those of all Ray workers together
    loop_s: float  # Ray Train's in-loop seconds (the train_s each epoch records)
    ray_s: float  # run_student's wall time
    plain_s: float


def prepare(root: Path, config: PipelineConfig, n: int) -> tuple[TeacherResult, PartitionResult]:
    """A synthetic set of ``n`` images under ``root``, preprocessed, with its teacher and partition."""
    generate_dataset(root / "data", n=n, size=max(config.preprocess.size, 64), seed=0)
    run_preprocess(str(root / "data"), str(root / "pre"), config.preprocess)
    teacher = run_teacher(str(root / "pre"), str(root / "teacher"), config)
    return teacher, run_partition(str(root / "teacher"), str(root / "partition"), config.partition)


def time_ray(root: Path, config: PipelineConfig, partition: PartitionResult, variant: str) -> tuple[float, float]:
    """Ray Train's in-loop seconds and ``run_student``'s wall time."""
    start = time.perf_counter()
    student = run_student(str(root / "pre"), str(root / "teacher"), partition, str(root / "student"), config, variant)
    ray_s = time.perf_counter() - start
    return storage.read_csv(storage.join(student.folder, HISTORY))["train_s"].sum(), ray_s


def run(args: argparse.Namespace) -> Timings:
    init_ray()
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        config = pipeline_config(root, args)
        teacher, partition = prepare(root, config, args.n)
        loop_s, ray_s = time_ray(root, config, partition, args.variant)
        splits = partition.table()
        pixels, labels = load_train(str(root / "pre"), splits.loc[splits["split"] == "train", "image_id"].tolist())
        threads = args.workers * worker_threads(args.cpus_per_worker)
        torch.set_num_threads(threads)
        plain = replace(config, student=replace(config.student, batch_size=args.batch_size * args.workers))
        plain_s = time_plain(pixels, labels, plain, args.variant, teacher.uri(WEIGHTS))
    return Timings(len(labels), threads, loop_s, ray_s, plain_s)


def rows(args: argparse.Namespace, t: Timings) -> list[dict]:
    """Images/s of each mode as ratios to the plain loop's; with ``--gpu`` also Ray's per GPU."""
    images, device = t.train_images * args.epochs, "GPU + AMP" if args.gpu else "CPU"
    modes = [(f"ray train loop ({args.workers} workers)", t.loop_s),
             ("ray train fit wall (+ start-up, validation, checkpoints, publishing)", t.ray_s),
             ("plain loop (1 process, baseline)", t.plain_s)]
    out = [row(NAME, f"{mode}, {device}", images / s, "images/s", images / t.plain_s) for mode, s in modes]
    if args.gpu:  # one GPU per worker
        out.append(row(NAME, "ray train loop per GPU, AMP", images / t.loop_s / args.workers, "images/s/GPU",
                       images / t.plain_s))
    return out


def measure(args: argparse.Namespace) -> list[dict]:
    return rows(args, run(args))


def main() -> None:
    args = parser().parse_args()
    logging.basicConfig(level=logging.WARNING)
    t = run(args)
    print(f"\nstudent {args.variant}: {args.n} images at {args.size} px ({t.train_images} train), resnet18, "
          f"global batch {args.batch_size * args.workers}, {args.epochs} epochs; torch threads: plain {t.threads}, "
          f"Ray {args.workers} workers × {t.threads // args.workers}")
    print_rows(rows(args, t))


if __name__ == "__main__":
    main()
