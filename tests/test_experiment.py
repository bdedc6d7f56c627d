"""``skin experiment``: seeds, a fixed or moving partition, and the published comparison."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from conftest import run_folder, tiny_config
from raytasks.experiment import JSON, MARKDOWN, SEEDS_CSV, run_experiment, seed_configs, write_results
from raytasks.pipeline import PipelineResult
from skin_core.config import ExperimentConfig


def test_seed_configs_move_teacher_partition_and_students_together_or_keep_the_partition() -> None:
    base = tiny_config("/tmp/unused")
    moving = replace(base, experiment=ExperimentConfig(seeds=(3, 4)))
    teacher, student = seed_configs(moving, 4)
    assert (teacher.seed, teacher.partition.seed, student.seed) == (4, 4, 4)
    fixed = replace(base, experiment=ExperimentConfig(seeds=(3, 4), fixed_partition=True))
    teacher, student = seed_configs(fixed, 4)
    assert (teacher.seed, teacher.partition.seed, student.seed) == (3, 3, 4)
    assert seed_configs(fixed, 3)[0] == seed_configs(fixed, 4)[0]  # the same teacher and partition config


@pytest.mark.slow
def test_two_seeds_two_variants_write_the_comparison(tiny_run: PipelineResult, tmp_path: Path) -> None:
    """On a finished pipeline's output (the smoke profile at seed 0), as a user would run it after a pipeline."""
    config = tiny_config(str(run_folder(tiny_run)), tracking={"enabled": False})
    config = replace(config, experiment=ExperimentConfig(seeds=(0, 1), fixed_partition=True, n_boot=200))
    result = run_experiment(config)
    first, second = result.seeds
    # seed 0 is the pipeline's own run: every stage of it is reused, nothing is trained again
    assert all(s.reused for s in first.stages) and first.teacher.folder == tiny_run.teacher.folder
    # a fixed partition: one teacher and one partition shared; the students differ by seed
    assert first.teacher.folder == second.teacher.folder and second.teacher.reused
    assert {s.summary.variant for s in first.students} == {"baseline", "layer3"}
    assert first.students[0].folder != second.students[0].folder
    comparison = result.comparison
    data = json.loads(comparison.read_bytes(JSON))
    seeds = comparison.read_csv(SEEDS_CSV)
    assert sorted(seeds["seed"].unique()) == [0, 1] and set(seeds["weights"]) == {"kept", "last"}
    assert {d["variant"] for d in data["differences"]} == {"AT layer3"}
    assert all(d["low"] <= d["difference"] <= d["high"] for d in data["differences"])
    assert "Attention transfer − baseline" in comparison.read_bytes(MARKDOWN).decode()
    write_results(str(tmp_path / "results.md"), config, result)
    text = (tmp_path / "results.md").read_text()
    assert "What this says about the paper's claim" in text and "Wall time:" in text
    # the epoch-time table: one row per seed, its total the sum of the histories' timed parts
    lines = text.splitlines()
    header = lines.index("| seed | teacher | baseline | AT layer3 | total |")
    rows = lines[header + 2:header + 4]
    assert [row.split("|")[1].strip() for row in rows] == ["0", "1"]
    teacher_s = first.teacher.read_csv("history.csv")[["extract_s", "kmeans_s", "train_s"]].sum().sum()
    students_s = sum(s.read_csv("history.csv")[["train_s", "val_s"]].sum().sum() for s in first.students)
    assert float(rows[0].split("|")[-2]) == pytest.approx((teacher_s + students_s) / 60, abs=0.051)
    # a rerun reuses every stage, the comparison included
    again = run_experiment(config)
    assert again.comparison.reused and all(s.reused for o in again.seeds for s in o.stages)
