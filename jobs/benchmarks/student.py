"""Benchmark: the student's Ray Train fit against a plain PyTorch loop, at the old and the new worker settings.

One run prepares a synthetic set through the pipeline's own stages (``raytasks.workflow``: preprocessing,
a 1-epoch teacher, the partition), then trains the same variants on the same train and validation images,
with the same model, objective, augmentation, seed and global batch, three ways:

- the plain loop (the baseline): this process reads and decodes the two splits once, then runs each
  epoch's ``train_epoch`` and validation pass with as many torch threads as the Ray workers have together;
- ``train_students`` at each setting of ``fits.SETTINGS`` (old: 2 workers × 0.5 CPU, DDP; new: auto).

Per setting: the Ray Train loop's images/s (images trained / Σ the ``train_s`` each epoch records) and the
whole fit's (images trained / the stages' wall time, which adds start-up, loading and decoding,
validation, checkpoints and publishing), each as a ratio to the plain loop's (images / Σ train seconds;
images / read + decode + train + validate); the fixed cost (wall − Σ per-epoch ``train_s + val_s``); and a
no-op TorchTrainer fit on the same workers (Ray Train's floor).  All pending variants train in one fit,
so ``--variants baseline layer3+layer4`` shows the fixed cost paid once for two.

    python jobs/benchmarks/student.py --n 2000 --size 64 --epochs 3
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time
from pathlib import Path

import pandas as pd
import torch

from raytasks import workflow
from raytasks.partition import splits
from raytasks.preprocess import read_table
from raytasks.runtime import init_ray, worker_plan
from raytasks.stages import StageOutput
from raytasks.student import HISTORY, train_students
from raytasks.teacher import WEIGHTS
from raytasks.tracking import TrackedRun
from raytasks.worker import InMemorySplit
from skin_core.classes import CLASSES
from skin_core.config import PipelineConfig, from_dict
from skin_core.layers import LayerSet
from skin_core.losses.attention_transfer import StudentObjective
from skin_core.metrics.classification import classification_report
from skin_core.models import create_model
from skin_core.preprocessing.pipeline import decode_pngs
from skin_core.training.student import freeze, predict_probs, train_epoch

if __package__:  # imported as benchmarks.student by jobs/benchmark.py
    from .fits import (GOALS, SETTINGS, FitTimes, PlainTimes, fit_rows, machine_load, noop_fit_s, overhead_parts,
                        plain_rows, total_threads, with_resources)
    from .table import print_rows
else:  # run as a script
    from fits import (GOALS, SETTINGS, FitTimes, PlainTimes, fit_rows, machine_load, noop_fit_s, overhead_parts,
                       plain_rows, total_threads, with_resources)
    from table import print_rows

NAME = "student"


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=2000, help="synthetic images (before the partition holds some out)")
    p.add_argument("--size", type=int, default=64, help="preprocessed image size (the real-data profile's: 64)")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=64, help="global batch, split over the workers")
    p.add_argument("--variants", nargs="+", default=["baseline"], help="e.g. baseline layer3+layer4")
    p.add_argument("--settings", nargs="+", choices=list(SETTINGS), default=list(SETTINGS))
    p.add_argument("--test-clusters", type=int, default=4, help="of 16 teacher clusters, held out as test")
    p.add_argument("--gpu", action="store_true", help="one worker per GPU, AMP (use --settings new)")
    return p


def pipeline_config(root: Path, args: argparse.Namespace) -> PipelineConfig:
    return from_dict(PipelineConfig, {
        "profile": "benchmark", "out": str(root),
        "data": {"synthetic_n": args.n, "synthetic_size": max(2 * args.size, 64)},
        "preprocess": {"size": args.size}, "model": {"arch": "resnet18", "embedding_dim": 64},
        "teacher": {"epochs": 1, "clusters": 16, "pca_dim": 32, "batch_size": args.batch_size},
        "partition": {"test_clusters": args.test_clusters},
        "student": {"epochs": args.epochs, "batch_size": args.batch_size, "variants": args.variants},
        "resources": {"num_workers": 0, "use_gpu": args.gpu}, "tracking": {"enabled": False}})


def load_splits(preprocessed: StageOutput, partition: StageOutput) -> tuple[InMemorySplit, InMemorySplit, float]:
    """The train and validation images decoded into memory, and the seconds that took."""
    table = splits(partition)
    start = time.perf_counter()
    frame = read_table(preprocessed, columns=["image_id", "image", "label_idx"],
                       image_ids=table.loc[table["split"].isin(["train", "val"]), "image_id"].tolist())
    data = {"pixels": decode_pngs(list(frame["image"])), "label_idx": frame["label_idx"].to_numpy()}
    is_val = frame["image_id"].isin(table.loc[table["split"] == "val", "image_id"]).to_numpy()
    return InMemorySplit.of(data, ~is_val), InMemorySplit.of(data, is_val), time.perf_counter() - start


def plain_variant(config: PipelineConfig, variant: str, train: InMemorySplit, val: InMemorySplit,
                  teacher_weights: str) -> pd.DataFrame:
    """One variant in this process: per epoch, the images trained and the training and validation seconds."""
    s, layers = config.student, LayerSet.parse(variant)
    device = torch.device("cuda" if config.resources.use_gpu else "cpu")
    torch.manual_seed(config.seed)
    model = create_model(config.model, head="classifier", layers=layers.layers).to(device)
    teacher = None if layers.is_baseline else freeze(
        create_model(config.model, head="embedding", layers=layers.layers, weights=teacher_weights)).to(device)
    objective = StudentObjective(layers.layers, beta=0.0 if layers.is_baseline else s.at_beta)
    optimizer = torch.optim.SGD(model.parameters(), lr=s.lr, momentum=0.9, weight_decay=1e-4)
    steps = max(1, len(train) // s.batch_size)
    epochs = []
    for epoch in range(s.epochs):
        generator = torch.Generator().manual_seed(config.seed * 100_003 + epoch)
        start = time.perf_counter()
        train_epoch(model, train.batches(s.batch_size, steps, generator), objective, optimizer, device,
                    teacher=teacher, generator=generator, amp=config.resources.use_gpu, augment=config.augment)
        trained = time.perf_counter()
        probs = predict_probs(model, val.pixels, device, batch_size=128, amp=config.resources.use_gpu)
        classification_report(val.labels.numpy(), probs.reshape(len(val), len(CLASSES)))
        epochs.append({"images": steps * s.batch_size, "train_s": trained - start,
                       "val_s": time.perf_counter() - trained})
    return pd.DataFrame(epochs)


def time_plain(config: PipelineConfig, preprocessed: StageOutput, teacher: StageOutput, partition: StageOutput,
               threads: int) -> PlainTimes:
    """Every variant in this process with ``threads`` torch threads, from reading the shards on."""
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        train, val, load_s = load_splits(preprocessed, partition)
        epochs = pd.concat([plain_variant(config, v, train, val, teacher.file(WEIGHTS))
                            for v in config.student.variants])
    finally:
        torch.set_num_threads(previous)
    return PlainTimes(images=float(epochs["images"].sum()), loop_s=float(epochs["train_s"].sum()),
                      whole_s=load_s + float((epochs["train_s"] + epochs["val_s"]).sum()), threads=threads,
                      best=float((epochs["images"] / epochs["train_s"]).max()))


def time_fit(config: PipelineConfig, preprocessed: StageOutput, teacher: StageOutput, partition: StageOutput,
             folder: Path) -> FitTimes:
    """``train_students`` (every variant in one fit) into fresh folders; its histories' and wall seconds."""
    plan, floor_s = worker_plan(config.resources), noop_fit_s(config)
    variants = config.student.variants
    called = time.time()
    outputs = train_students(preprocessed, teacher, partition, config, variants, TrackedRun(),
                             folders=[str(folder / LayerSet.parse(v).name) for v in variants])
    returned = time.time()
    history = pd.concat([output.read_csv(HISTORY) for output in outputs], ignore_index=True)
    return FitTimes(images=float((history["images_per_s"] * history["train_s"]).sum()),
                    loop_s=float(history["train_s"].sum()),
                    compute_s=float((history["train_s"] + history["val_s"]).sum()), wall_s=returned - called,
                    **overhead_parts(history, ["train_s", "val_s"], called, returned), floor_s=floor_s,
                    workers=plan.num_workers, threads=plan.threads, best=float(history["images_per_s"].max()))


def run(args: argparse.Namespace) -> tuple[list[dict], str]:
    """The table's rows and a one-line description of what was measured."""
    init_ray()
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        config = pipeline_config(root, args)
        tracker = TrackedRun()
        prepared = workflow.prepare(config, tracker)
        teacher, partition = workflow.teacher_and_partition(config, prepared.preprocessed, tracker)
        plains: dict[int, PlainTimes] = {}
        rows = []
        for setting in args.settings:
            at = with_resources(config, setting, args.gpu)
            threads = total_threads(at)
            if threads not in plains:  # one plain loop per thread count the settings use
                plains[threads] = time_plain(at, prepared.preprocessed, teacher, partition, threads)
                rows += plain_rows(NAME, plains[threads])
            fit = time_fit(at, prepared.preprocessed, teacher, partition, root / f"students-{setting}")
            rows += fit_rows(NAME, setting, fit, plains[threads])
        p = partition.summary
    about = (f"student {' '.join(args.variants)}: {args.n} synthetic images at {args.size} px ({p.train} train, "
             f"{p.val} val), resnet18, global batch {args.batch_size}, {args.epochs} epochs, "
             f"{'GPU + AMP' if args.gpu else 'CPU'}; {machine_load()} at the end")
    return rows, about


def measure(args: argparse.Namespace) -> list[dict]:
    return run(args)[0]


def main() -> None:
    args = parser().parse_args()
    logging.basicConfig(level=logging.WARNING)
    rows, about = run(args)
    print(f"\n{about}\n{GOALS}")
    print_rows(rows)


if __name__ == "__main__":
    main()
