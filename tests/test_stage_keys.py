"""Stage keys follow the data switches: changing one reruns the stages that depend on it, and only those.

The keys come from the real stage builders (``preprocess_stage``, ``teacher_stage``,
``partition_stage``, ``student_inputs``); no Ray starts.  A downstream stage's
key reads only its upstream stage's key, so each upstream is the publication
that a finished stage with that key would have left.  The partition stage, which
needs no Ray, also runs for real on a published teacher table.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from raytasks.partition import format_partition, partition_stage, splits
from raytasks.preprocess import preprocess_stage
from raytasks.stages import StageOutput, run_stage
from raytasks.student import student_inputs
from raytasks.teacher import ASSIGNMENTS, teacher_stage
from raytasks.tracking import TrackedRun
from skin_core import storage
from skin_core.config import PartitionConfig, PipelineConfig, config_hash, from_dict
from skin_core.data.isic import Manifest, load_isic
from skin_core.layers import LayerSet
from skin_core.publish import Publication, publish, start_run
from skin_core.synth import generate_dataset
from skin_core.synth.dataset import plan_dataset

STAGES = ("preprocess", "teacher", "partition", "student")


def finished(key: str) -> StageOutput:
    """A published stage with ``key`` (all a downstream stage builder reads of it)."""
    return StageOutput("upstream", Publication(out="/published", config_hash=key, run="run-1", files=()), True, None)


@pytest.fixture(scope="module")
def manifest(tmp_path_factory: pytest.TempPathFactory) -> Manifest:
    root = tmp_path_factory.mktemp("keys")
    generate_dataset(root, n=24, size=32, seed=0)
    return load_isic(str(root))


def stage_keys(manifest: Manifest, **sections: dict) -> dict[str, str]:
    config = from_dict(PipelineConfig, sections)
    pre = preprocess_stage(manifest, config.preprocess)
    teacher = teacher_stage(finished(pre.key), config)
    partition = partition_stage(finished(teacher.key), config.partition)
    student = student_inputs(finished(pre.key), finished(teacher.key), finished(partition.key), config,
                             LayerSet.parse("layer3"))
    return dict(zip(STAGES, (pre.key, teacher.key, partition.key, config_hash(student))))


@pytest.mark.parametrize(("sections", "first_changed"), [
    ({"preprocess": {"resize_mode": "stretch"}}, "preprocess"),
    ({"preprocess": {"border_crop": "bbox_fill"}}, "preprocess"),
    ({"teacher": {"origins": ["HAM", "BCN", "unknown"]}}, "teacher"),
    ({"partition": {"origins": ["HAM", "BCN"]}}, "partition"),
    ({"partition": {"test_share": 0.44}}, "partition"),
    ({"partition": {"test_cluster_ids": [0, 3]}}, "partition"),
])
def test_a_switch_reruns_its_stage_and_what_follows(manifest: Manifest, sections: dict, first_changed: str) -> None:
    before, after = stage_keys(manifest), stage_keys(manifest, **sections)
    first = STAGES.index(first_changed)
    assert [before[s] == after[s] for s in STAGES] == [i < first for i in range(len(STAGES))]


def test_switches_are_logged_with_their_stage(manifest: Manifest) -> None:
    config = from_dict(PipelineConfig, {"preprocess": {"border_crop": "bbox_fill", "resize_mode": "stretch"},
                                        "teacher": {"origins": ["HAM", "BCN", "unknown"]},
                                        "partition": {"origins": ["HAM", "BCN"], "test_share": 0.44}})
    pre = preprocess_stage(manifest, config.preprocess)
    teacher = teacher_stage(finished(pre.key), config)
    partition = partition_stage(finished(teacher.key), config.partition)
    assert (pre.params["preprocess.border_crop"], pre.params["preprocess.resize_mode"]) == ("bbox_fill", "stretch")
    assert teacher.params["teacher.origins"] == ["HAM", "BCN", "unknown"]
    assert partition.params["partition.origins"] == ["HAM", "BCN"] and partition.params["partition.test_share"] == 0.44
    assert partition.params["partition.test_cluster_ids"] == []



def test_partition_stage_applies_the_switches(tmp_path: Path) -> None:
    """The real partition stage on a published teacher table: origins filtered, test share aimed at and recorded."""
    table = plan_dataset(600, seed=2)[["image", "label", "origin", "lesion_id"]].rename(columns={"image": "image_id"})
    rng = np.random.default_rng(2)
    lesions = sorted(table["lesion_id"].unique())
    home = dict(zip(lesions, rng.choice(16, size=len(lesions), p=rng.dirichlet(np.full(16, 0.5)))))
    table["cluster"] = table["lesion_id"].map(home)
    out = str(tmp_path / "teacher")
    run = start_run(out)
    storage.write_bytes(storage.join(out, run, ASSIGNMENTS), table.to_csv(index=False).encode())
    teacher = StageOutput("teacher", publish(out, run, "teacher-key", {}), True, None)
    config = PartitionConfig(origins=("HAM", "BCN"), test_share=0.44)
    result = run_stage(partition_stage(teacher, config), str(tmp_path / "partition"), TrackedRun())
    assignment = splits(result)
    assert set(assignment["origin"]) == {"HAM", "BCN"} and len(result.summary.test_clusters) == 8
    assert result.summary.test_share == round(float((assignment["split"] == "test").mean()), 4)
    assert abs(result.summary.test_share - 0.44) <= 0.05
    assert f"({result.summary.test_share:.1%}; held-out clusters" in format_partition(result)
