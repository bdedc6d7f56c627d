"""The GPU machine's check (issue 12), run by ``jobs/benchmarks/gpu.sh``: one table in at most 8 minutes.

(a) ResNet-50 training throughput at 224 px, bf16 autocast and ``channels_last``, images/s per GPU: the
    project's classifier (``create_model``, the student's network) with SGD on a batch already on the GPU
    (no loader: this is the device's ceiling), beside NVIDIA's published mixed-precision figure;
(b) faiss k-means (``skin_core.clustering.kmeans``) on 25,000 × 2,048 features, K = 16, on the GPU against
    the CPU (the GPU half is skipped with a note where faiss has no GPU support);
(c) one teacher epoch and one student epoch per variant through the pipeline's own Ray Train stages with
    ``use_gpu`` (auto plan: one worker per GPU, AMP) on a synthetic set preprocessed to 224 px.

``--dry-run`` runs every part at tiny sizes on the CPU (no GPU needed): the test suite runs it.  A part
whose packages are missing on the machine is reported as skipped, with what is missing, instead of
stopping the others.

NVIDIA's reference for (a): "ResNet50 v1.5 For PyTorch", NVIDIA Deep Learning Examples, Training
performance, 1× A100 80GB (DGX A100), mixed precision, batch 256, pytorch-21.03 NGC container:
2470 img/s.  https://github.com/NVIDIA/DeepLearningExamples/blob/master/PyTorch/Classification/ConvNets/resnet50v1.5/README.md
That table stops at the A100; NVIDIA publishes no H100/H200 row for it (its H100 ResNet-50 figures are
MLPerf time-to-train for 8 GPUs, https://developer.nvidia.com/deep-learning-performance-training-inference/training,
not images/s per GPU), so the ratio printed is against the A100 figure, the previous data-centre generation.

    bash jobs/benchmarks/gpu.sh [--dry-run]
"""

from __future__ import annotations

import argparse
import importlib.util
import logging
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))  # beside the other benchmarks' table

from table import print_rows, row  # noqa: E402

NAME = "gpu"
REFERENCE = ("NVIDIA DLE ResNet50 v1.5 PyTorch, 1× A100 80GB, mixed precision, batch 256", 2470.0)
REFERENCE_URL = ("https://github.com/NVIDIA/DeepLearningExamples/blob/master/PyTorch/Classification/ConvNets/"
                 "resnet50v1.5/README.md")
NEEDS = {"resnet50": ("torchvision", "yaml"), "kmeans": ("faiss", "sklearn"),
         "ray": ("ray", "faiss", "mlflow", "pytorch_metric_learning", "cv2", "pyarrow", "pandas", "sklearn")}


@dataclass(frozen=True)
class Sizes:
    """Every part's size: the real check's, or ``--dry-run``'s tiny ones."""

    image: int = 224
    batch: int = 256
    warmup: int = 15
    steps: int = 60
    points: int = 25_000
    dim: int = 2048
    k: int = 16
    synthetic: int = 1000  # images of the Ray Train part
    synthetic_size: int = 256
    arch: str = "resnet50"
    fit_batch: int = 128


DRY = Sizes(image=64, batch=4, warmup=1, steps=2, points=400, dim=64, k=4, synthetic=64, synthetic_size=64,
            arch="resnet18", fit_batch=16)


def missing(part: str) -> list[str]:
    return [name for name in NEEDS[part] if importlib.util.find_spec(name) is None]


def resnet50_rows(sizes: Sizes, device: torch.device) -> list[dict]:
    """Training images/s of the project's ResNet-50 classifier: bf16 autocast, channels_last, SGD."""
    from skin_core.config import ModelConfig
    from skin_core.models import create_model

    torch.backends.cudnn.benchmark = True
    model = create_model(ModelConfig(arch="resnet50"), head="classifier").to(device, memory_format=torch.channels_last)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
    x = torch.randn(sizes.batch, 3, sizes.image, sizes.image, device=device).to(memory_format=torch.channels_last)
    y = torch.randint(0, 8, (sizes.batch,), device=device)

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=torch.bfloat16):
            loss = torch.nn.functional.cross_entropy(model(x)["logits"].float(), y)
        loss.backward()
        optimizer.step()

    for _ in range(sizes.warmup):
        step()
    sync(device)
    start = time.perf_counter()
    for _ in range(sizes.steps):
        step()
    sync(device)
    speed = sizes.batch * sizes.steps / (time.perf_counter() - start)
    label, reference = REFERENCE
    precision = "bf16 autocast" + ("" if device.type == "cuda" else " (CPU dry run)")
    return [row(NAME, f"(a) {label} (reference)", reference, "images/s", reference),
            row(NAME, f"(a) ResNet-50 {sizes.image} px, batch {sizes.batch}, {precision}, channels_last, "
                      f"on {device_name(device)}", speed, "images/s/GPU", reference)]


def kmeans_rows(sizes: Sizes, gpu: bool) -> list[dict]:
    """faiss k-means seconds on the CPU, and on the GPU where faiss has GPU support (ratio: CPU s / GPU s)."""
    from kmeans import median_run, mixture  # the CPU k-means benchmark's data and timing

    from skin_core.clustering import cluster_nmi, kmeans
    from skin_core.clustering.kmeans import _gpu_available

    x, _ = mixture(sizes.points, sizes.dim, sizes.k, spread=0.1, seed=0)

    def timed(use_gpu: bool) -> tuple[float, object]:
        start = time.perf_counter()
        result = kmeans(x, sizes.k, seed=0, use_gpu=use_gpu)
        return time.perf_counter() - start, result

    what = f"{sizes.points:,} × {sizes.dim:,}, K={sizes.k}, 20 iterations"
    cpu_s, cpu = median_run(lambda: timed(False), 1)
    rows = [row(NAME, f"(b) faiss k-means on the CPU, {what} (baseline)", cpu_s, "s", cpu_s)]
    if not (gpu and _gpu_available()):
        why = "no GPU (dry run)" if not gpu else "this faiss has no GPU support (install faiss-gpu; see gpu.sh)"
        return rows + [row(NAME, f"(b) faiss k-means on the GPU: skipped, {why}", float("nan"), "s")]
    gpu_s, found = median_run(lambda: timed(True), 1)
    return rows + [{**row(NAME, f"(b) faiss k-means on the GPU, {what} (ratio: CPU s / GPU s)", gpu_s, "s"),
                    "ratio": cpu_s / gpu_s},
                   row(NAME, "(b) NMI between the GPU and CPU partitions", cluster_nmi(cpu.assignments,
                                                                                      found.assignments), "NMI")]


def ray_rows(sizes: Sizes, gpu: bool) -> list[dict]:
    """One teacher epoch and one student epoch per variant through the pipeline's Ray Train stages."""
    import pandas as pd
    from fits import noop_fit_s, overhead_parts
    from raytasks import workflow
    from raytasks.runtime import init_ray
    from raytasks.student import HISTORY as STUDENT_HISTORY
    from raytasks.teacher import HISTORY as TEACHER_HISTORY
    from raytasks.tracking import TrackedRun
    from skin_core.config import PipelineConfig, from_dict

    init_ray()
    with tempfile.TemporaryDirectory() as scratch:
        config = from_dict(PipelineConfig, {
            "profile": "gpu-check", "out": scratch, "tracking": {"enabled": False},
            "data": {"synthetic_n": sizes.synthetic, "synthetic_size": sizes.synthetic_size},
            "preprocess": {"size": sizes.image}, "model": {"arch": sizes.arch, "embedding_dim": 128},
            "teacher": {"epochs": 1, "clusters": 16, "pca_dim": 64, "batch_size": sizes.fit_batch},
            "partition": {"test_clusters": 4},
            "student": {"epochs": 1, "batch_size": sizes.fit_batch, "variants": ["baseline", "layer3+layer4"]},
            "resources": {"num_workers": 0, "use_gpu": gpu, "cpus_per_worker": 4.0 if gpu else 1.0}})
        tracker = TrackedRun()
        prepared = workflow.prepare(config, tracker)
        floor_s = noop_fit_s(config)
        called = time.time()
        teacher, partition = workflow.teacher_and_partition(config, prepared.preprocessed, tracker)
        teacher_wall = time.time() - called
        teacher_history = teacher.read_csv(TEACHER_HISTORY, keep_default_na=True)
        teacher_startup = float(teacher_history["start_time"].min()) - called
        called = time.time()
        students = workflow.students(config, prepared.preprocessed, teacher, partition, tracker)
        returned = time.time()
        fixed = overhead_parts(pd.concat([out.read_csv(STUDENT_HISTORY) for out in students], ignore_index=True),
                               ["train_s", "val_s"], called, returned)
        epoch = teacher_history.iloc[0]
        where = f"{'GPU, AMP' if gpu else 'CPU dry run'}, {sizes.arch} at {sizes.image} px"
        rows = [row(NAME, f"(c) teacher epoch: MS-loss training ({where})", epoch["images_per_s"], "images/s"),
                row(NAME, f"(c) teacher epoch: extract + k-means + train of {teacher.summary.images} images",
                    epoch["extract_s"] + epoch["kmeans_s"] + epoch["train_s"], "s"),
                row(NAME, "(c) teacher stage wall (+ start-up, final clustering, publishing; and the partition)",
                    teacher_wall, "s")]
        for student in students:
            history = student.read_csv(STUDENT_HISTORY).iloc[0]
            rows += [row(NAME, f"(c) student {student.summary.variant} epoch: training ({where})",
                         history["images_per_s"], "images/s"),
                     row(NAME, f"(c) student {student.summary.variant} epoch: train + validate",
                         history["train_s"] + history["val_s"], "s")]
        return rows + [row(NAME, f"(c) student stages wall ({len(students)} variants, one fit)", returned - called, "s"),
                       *fixed_cost_rows(fixed, teacher_startup, floor_s)]


def fixed_cost_rows(students: dict[str, float], teacher_startup: float, floor_s: float) -> list[dict]:
    """Issue 12's fixed cost per stage on this node's cores, from the students' ``overhead_parts``."""
    startup, publish = students["startup_s"], students["publish_s"]
    return [row(NAME, "(c) students' fixed cost: start-up to the first epoch + publishing (goal ≤ 10 s)",
                startup + publish, "s"),
            row(NAME, "(c)   start-up: the students' stage call to their first epoch", startup, "s"),
            row(NAME, "(c)   publishing: their last epoch's end to the stage's return", publish, "s"),
            row(NAME, "(c) teacher start-up: the stage call to its first epoch", teacher_startup, "s"),
            row(NAME, "(c) no-op TorchTrainer fit on the same workers (Ray Train's floor)", floor_s, "s")]


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def device_name(device: torch.device) -> str:
    return torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"


def guarded(part: str, measure: Callable[[], list[dict]]) -> list[dict]:
    """``measure()``'s rows, or one row saying why the part was skipped or failed (the others still run)."""
    absent = missing(part)
    if absent:
        return [row(NAME, f"{part}: skipped, not installed here: {', '.join(absent)}", float("nan"), "")]
    start = time.perf_counter()
    try:
        rows = measure()
    except Exception as err:  # noqa: BLE001 - one part's failure must not hide the others' figures
        logging.getLogger(__name__).exception("%s failed", part)
        return [row(NAME, f"{part}: FAILED ({type(err).__name__}: {err})"[:160], float("nan"), "")]
    print(f"{part}: {time.perf_counter() - start:.0f} s", file=sys.stderr, flush=True)
    return rows


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dry-run", action="store_true", help="every part at tiny sizes on the CPU")
    p.add_argument("--only", action="append", choices=list(NEEDS), help="run just this part (repeatable)")
    return p


def main() -> int:
    args = parser().parse_args()
    logging.basicConfig(level=logging.WARNING)
    gpu = not args.dry_run
    if gpu and not torch.cuda.is_available():
        print("no visible GPU: run on the GPU machine, or pass --dry-run", file=sys.stderr)
        return 2
    sizes, device = (DRY, torch.device("cpu")) if args.dry_run else (Sizes(), torch.device("cuda"))
    parts = {"resnet50": lambda: resnet50_rows(sizes, device), "kmeans": lambda: kmeans_rows(sizes, gpu),
             "ray": lambda: ray_rows(sizes, gpu)}
    start = time.perf_counter()
    rows = [r for part, measure in parts.items() if not args.only or part in args.only
            for r in guarded(part, measure)]
    print(f"\nGPU check ({'dry run, CPU' if args.dry_run else device_name(device)}; torch {torch.__version__}; "
          f"{time.perf_counter() - start:.0f} s in all); reference: {REFERENCE_URL}")
    print_rows(rows)
    return 1 if any("FAILED" in r["measurement"] for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
