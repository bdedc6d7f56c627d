"""All the benchmarks in one run and one table, each figure a ratio to its baseline measured in the same run.

Runs jobs/benchmarks/{preprocess,kmeans,teacher,student}.py through their ``measure``
functions, with each one's own defaults or, with ``--quick``, small sizes (about
five minutes on 2 CPU cores).  Preprocessing reads the real ISIC sample in
../shared where it is present, else a synthetic set made for the run.  The
teacher and student each compare the old and the new worker settings with a
plain loop (``benchmarks/fits.py``).  ``--gpu`` trains them on every visible GPU
(the auto plan: one Ray worker each, AMP); ``jobs/benchmarks/gpu.sh`` is the
GPU machine's own check.

    python jobs/benchmark.py --quick [--gpu] [--only preprocess --only kmeans]
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import sys
import tempfile
import time
from pathlib import Path
from typing import Iterator

sys.path.insert(0, str(Path(__file__).resolve().parent))  # jobs/ is no package: make `benchmarks` importable

import torch  # noqa: E402

from benchmarks import kmeans, preprocess, student, teacher  # noqa: E402
from benchmarks.table import print_rows  # noqa: E402
from skin_core.synth import generate_dataset  # noqa: E402

MODULES = {"preprocess": preprocess, "kmeans": kmeans, "teacher": teacher, "student": student}
SMALL_FIT = ["--n", "300", "--size", "64", "--epochs", "1"]
QUICK = {"preprocess": ["--images", "300"], "kmeans": ["--n", "25000", "--dim", "1024", "--repeats", "1"],
         "teacher": SMALL_FIT, "student": SMALL_FIT}
SAMPLE = Path(__file__).resolve().parents[2] / "shared" / "data" / "isic2019" / "sample"


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="small sizes: about five minutes on 2 CPU cores")
    p.add_argument("--gpu", action="store_true", help="teacher and student on every visible GPU, with AMP")
    p.add_argument("--only", action="append", choices=list(MODULES), help="run just this benchmark (repeatable)")
    return p


@contextlib.contextmanager
def preprocess_data(needed: bool) -> Iterator[str]:
    """The real ISIC sample where ../shared holds it, else (when ``needed``) a temporary synthetic set."""
    if SAMPLE.is_dir() or not needed:
        yield str(SAMPLE)
        return
    with tempfile.TemporaryDirectory() as scratch:
        generate_dataset(scratch, n=100, size=256, seed=0)
        yield scratch


def benchmark_args(name: str, options: argparse.Namespace, data: str) -> argparse.Namespace:
    """``name``'s own arguments: its defaults, or small sizes with ``--quick``, plus the data and the GPUs."""
    argv = list(QUICK[name]) if options.quick else []
    if name == "preprocess":
        argv += ["--data", data]
    if options.gpu and name in ("teacher", "student"):
        argv += ["--gpu", "--settings", "new"]
    return MODULES[name].parser().parse_args(argv)


def measure_all(names: list[str], options: argparse.Namespace) -> list[dict]:
    rows = []
    with preprocess_data(needed="preprocess" in names) as data:
        for name in names:
            start = time.perf_counter()
            rows += MODULES[name].measure(benchmark_args(name, options, data))
            print(f"{name}: {time.perf_counter() - start:.0f} s", file=sys.stderr)
    return rows


def main() -> None:
    options = parser().parse_args()
    if options.gpu and not torch.cuda.is_available():
        parser().error("--gpu needs a visible GPU")
    logging.basicConfig(level=logging.WARNING)
    start = time.perf_counter()
    rows = measure_all([name for name in MODULES if not options.only or name in options.only], options)
    print(f"\n{'quick' if options.quick else 'default'} sizes, {'GPU' if options.gpu else 'CPU'}; "
          f"{time.perf_counter() - start:.0f} s in all; ratio = value / its benchmark's baseline in this run")
    print_rows(rows)


if __name__ == "__main__":
    main()
