"""Benchmark: the teacher's Ray Train fit against a plain PyTorch loop, at the old and the new worker settings.

One run preprocesses a synthetic set through the pipeline's own stage, then runs the same teacher (model,
global batch, seed, data) three ways:

- the plain loop (the baseline): this process reads and decodes every image once, then for each epoch
  extracts features, clusters them (``cluster_globally``: PCA-whitening, faiss k-means and the label
  quality figures, as on rank 0) and trains one Multi-Similarity epoch on the pseudo-labels, with the
  ``skin_core.training.teacher`` functions and as many torch threads as the Ray workers have together;
  like the stage, it clusters once more after the last epoch;
- ``teacher_stage`` through ``run_stage`` at each setting of ``fits.SETTINGS`` (old: 2 workers × 0.5 CPU,
  DDP; new: auto).

Per setting: the Ray Train loop's images/s (images × epochs / Σ the per-epoch extract, k-means and train
seconds the workers record) and the whole fit's (the same images / the stage's wall time), each as a ratio
to the plain loop's (the same images / its epochs' seconds; / read + decode + epochs); the fixed cost
(wall − Σ recorded per-epoch seconds); Ray Train's floor (a no-op fit); and each phase's seconds beside
the plain loop's, to show where a gap comes from.

    python jobs/benchmarks/teacher.py --n 2000 --size 64 --epochs 3
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time
from pathlib import Path

import torch

from raytasks import workflow
from raytasks.preprocess import read_table
from raytasks.runtime import init_ray, worker_plan
from raytasks.stages import StageOutput, run_stage
from raytasks.teacher import HISTORY, teacher_stage
from raytasks.tracking import TrackedRun
from raytasks.udfs import decode_for_teacher
from skin_core.config import PipelineConfig, from_dict
from skin_core.losses.multi_similarity import MultiSimilarityCriterion
from skin_core.models import create_model
from skin_core.training.teacher import cluster_globally, extract_features, train_epoch

if __package__:  # imported as benchmarks.teacher by jobs/benchmark.py
    from .fits import (GOALS, SETTINGS, FitTimes, PlainTimes, fit_rows, machine_load, noop_fit_s, overhead_parts,
                        plain_rows, total_threads, with_resources)
    from .table import print_rows, row
else:  # run as a script
    from fits import (GOALS, SETTINGS, FitTimes, PlainTimes, fit_rows, machine_load, noop_fit_s, overhead_parts,
                       plain_rows, total_threads, with_resources)
    from table import print_rows, row

NAME = "teacher"
PHASES = ("extract_s", "kmeans_s", "train_s")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=2000, help="synthetic images")
    p.add_argument("--size", type=int, default=64, help="preprocessed image size (the real-data profile's: 64)")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=64, help="global batch, split over the workers")
    p.add_argument("--arch", default="resnet18")
    p.add_argument("--settings", nargs="+", choices=list(SETTINGS), default=list(SETTINGS))
    p.add_argument("--gpu", action="store_true", help="one worker per GPU, AMP (use --settings new)")
    return p


def pipeline_config(root: Path, args: argparse.Namespace) -> PipelineConfig:
    return from_dict(PipelineConfig, {
        "profile": "benchmark", "out": str(root),
        "data": {"synthetic_n": args.n, "synthetic_size": max(2 * args.size, 64)},
        "preprocess": {"size": args.size}, "model": {"arch": args.arch, "embedding_dim": 64},
        "teacher": {"epochs": args.epochs, "clusters": 16, "pca_dim": 32, "batch_size": args.batch_size},
        "resources": {"num_workers": 0, "use_gpu": args.gpu}, "tracking": {"enabled": False}})


def load_images(preprocessed: StageOutput) -> tuple[dict, float]:
    """Every image decoded, with its id, label and k-NN hold-out flag (as the workers get them); seconds."""
    start = time.perf_counter()
    frame = read_table(preprocessed, columns=["image_id", "image", "label_idx", "lesion_id"])
    shard = decode_for_teacher({column: frame[column].to_numpy() for column in frame.columns})
    return shard, time.perf_counter() - start


def time_plain(config: PipelineConfig, preprocessed: StageOutput, threads: int) -> tuple[PlainTimes, dict]:
    """The teacher's epochs in this process with ``threads`` torch threads; and its seconds per phase."""
    t, device = config.teacher, torch.device("cuda" if config.resources.use_gpu else "cpu")
    amp = config.resources.use_gpu
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        shard, load_s = load_images(preprocessed)
        images = torch.from_numpy(shard["pixels"])
        torch.manual_seed(config.seed)
        model = create_model(config.model, head="embedding").to(device)
        optimizer = torch.optim.SGD(model.parameters(), lr=t.lr, momentum=0.9, weight_decay=1e-5)
        criterion = MultiSimilarityCriterion(t.ms_alpha, t.ms_beta, t.ms_base, t.miner_epsilon)
        steps = max(1, len(images) // t.batch_size)
        phases, epoch_s = dict.fromkeys(PHASES, 0.0), []
        for epoch in range(t.epochs + 1):  # the last pass only clusters, as in the stage
            start = time.perf_counter()
            features = extract_features(model, images, t.batch_size * 2, device, amp)
            extracted = time.perf_counter()
            clusters = cluster_globally(shard["image_id"], features, t.clusters, t.pca_dim,
                                        seed=config.seed * 1000 + epoch, labels=shard["label_idx"],
                                        heldout=shard["heldout"])
            clustered = time.perf_counter()
            if epoch < t.epochs:
                train_epoch(model, images, clusters.local(), criterion=criterion, optimizer=optimizer,
                            batch_size=t.batch_size, steps=steps, seed=config.seed, epoch=epoch, device=device,
                            amp=amp)
            for phase, seconds in zip(PHASES, (extracted - start, clustered - extracted,
                                               time.perf_counter() - clustered)):
                phases[phase] += seconds
            epoch_s.append(time.perf_counter() - start)
    finally:
        torch.set_num_threads(previous)
    epochs_s = sum(phases.values())
    best = len(images) / min(epoch_s[:-1])  # a training epoch (the last pass only clusters)
    return PlainTimes(float(len(images) * t.epochs), epochs_s, load_s + epochs_s, threads, best), phases


def time_fit(config: PipelineConfig, preprocessed: StageOutput, folder: Path) -> tuple[FitTimes, dict]:
    """The teacher stage into a fresh folder: its recorded seconds and wall time; and its seconds per phase."""
    plan, floor_s = worker_plan(config.resources), noop_fit_s(config)
    called = time.time()
    result = run_stage(teacher_stage(preprocessed, config), str(folder), TrackedRun())
    returned = time.time()
    history = result.read_csv(HISTORY, keep_default_na=True)
    phases = {phase: float(history[phase].sum()) for phase in PHASES}
    epochs_s = sum(phases.values())
    training = history[~history["final"].astype(bool)]
    fastest = training[list(PHASES)].sum(axis=1).min()
    fit = FitTimes(images=float(result.summary.images * config.teacher.epochs), loop_s=epochs_s,
                   compute_s=epochs_s, wall_s=returned - called, floor_s=floor_s, workers=plan.num_workers,
                   **overhead_parts(history, list(PHASES), called, returned),
                   threads=plan.threads, best=result.summary.images / fastest)
    return fit, phases


def phase_rows(setting: str, phases: dict, plain: dict) -> list[dict]:
    """Each phase's seconds over all epochs; its ratio is the plain loop's seconds / Ray's (a speed ratio)."""
    return [{**row(NAME, f"{phase[:-2]} phase, {setting} (ratio: plain s / Ray s)", phases[phase], "s"),
             "ratio": plain[phase] / phases[phase] if phases[phase] > 0 else None}
            for phase in PHASES]


def run(args: argparse.Namespace) -> tuple[list[dict], str]:
    """The table's rows and a one-line description of what was measured."""
    init_ray()
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        config = pipeline_config(root, args)
        preprocessed = workflow.prepare(config, TrackedRun()).preprocessed
        plains: dict[int, tuple[PlainTimes, dict]] = {}
        rows = []
        for setting in args.settings:
            at = with_resources(config, setting, args.gpu)
            threads = total_threads(at)
            if threads not in plains:  # one plain loop per thread count the settings use
                plains[threads] = time_plain(at, preprocessed, threads)
                rows += plain_rows(NAME, plains[threads][0])
                rows += [row(NAME, f"{p[:-2]} phase, plain loop", s, "s") for p, s in plains[threads][1].items()]
            fit, phases = time_fit(at, preprocessed, root / f"teacher-{setting}")
            rows += fit_rows(NAME, setting, fit, plains[threads][0]) + phase_rows(setting, phases, plains[threads][1])
    about = (f"teacher: {args.n} synthetic images at {args.size} px, {args.arch}, global batch {args.batch_size}, "
             f"{args.epochs} epochs (+ the final clustering pass), {'GPU + AMP' if args.gpu else 'CPU'}; "
             f"{machine_load()} at the end")
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
