"""Typed configuration: profiles, overrides, errors that name the field, hashing."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest
import yaml

from raytasks.settings import PROFILE_DIRS, add_config_args, config_from_args
from skin_core.config import (ConfigError, PipelineConfig, config_hash, flatten, load_config, profile_path,
                              to_dict)
from skin_core.layers import LayerSet
from skin_core.models import check_transfer_layers


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_config_args(parser)
    return parser.parse_args(argv)


def test_profiles_hold_the_paper_and_demo_settings() -> None:
    paper = load_config(profile_path("paper", PROFILE_DIRS))
    demo = load_config(profile_path("demo", PROFILE_DIRS))
    assert (paper.preprocess.size, paper.model.arch, paper.teacher.clusters) == (224, "resnet50", 16)
    assert paper.teacher.epochs == paper.student.epochs == 100 and paper.student.imbalance == "none"
    assert demo.model.arch == "resnet18" and demo.preprocess.size < 224 and demo.teacher.epochs <= 5
    # the local profile must leave Ray Data a CPU next to the training workers
    assert demo.resources.num_workers * demo.resources.cpus_per_worker + demo.resources.data_cpus <= 2


def test_overrides_are_typed() -> None:
    config = config_from_args(parse("--profile", "demo", "--set", "teacher.epochs=7",
                                    "--set", "student.variants=[baseline, layer1+layer2]",
                                    "--set", "teacher.lr=1"), ["data.path=s3://b/isic"])
    assert config.teacher.epochs == 7 and config.data.path == "s3://b/isic"
    assert config.student.variants == ("baseline", "layer1+layer2")
    assert isinstance(config.teacher.lr, float) and config.teacher.lr == 1.0


@pytest.mark.parametrize(("override", "message"), [
    ("teacher.epoch=3", r"unknown config field\(s\) teacher.epoch"),
    ("teacher.epochs=three", r"teacher.epochs: expected int, got 'three'"),
    ("preprocess.remove_borders=1", r"preprocess.remove_borders: expected bool"),
    ("teacher.clusters=true", r"teacher.clusters: expected int, got True"),
    ("epochs", r"expected KEY=VALUE"),
    ("student.variants=[layer5]", r"'layer5' is neither 'baseline' nor layers"),
    ("student.select_metric=auc", r"student.select_metric: 'auc'"),
    ("preprocess.resize_mode=squash", r"preprocess.resize_mode: 'squash'; use center_crop or pad or stretch"),
    ("preprocess.border_crop=circle", r"preprocess.border_crop: 'circle'; use inscribed or bbox_fill"),
    ("teacher.origins=[HAM, ISIC]", r"teacher.origins: \['HAM', 'ISIC'\]; list origins from"),
    ("teacher.origins=HAM", r"teacher.origins: expected a list"),
    ("partition.origins=[BCN, BCN]", r"partition.origins: \['BCN', 'BCN'\]"),
    ("partition.test_cluster_ids=[3, 3]", r"partition.test_cluster_ids: \[3, 3\]; give distinct"),
    ("partition.test_cluster_ids=[-1]", r"partition.test_cluster_ids: \[-1\]"),
    ("partition.test_share=1.2", r"partition.test_share: 1.2"),
    ("partition.test_share=-0.1", r"partition.test_share: -0.1"),
    ("partition.test_clusters=0", r"partition.test_clusters: 0; give a count >= 1"),
    ("partition.val_fraction=1", r"partition.val_fraction: 1.0"),
])
def test_bad_overrides_name_the_field(override: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        config_from_args(parse("--set", override))


def test_unknown_profile_and_bad_yaml(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="unknown profile 'nope'"):
        profile_path("nope", PROFILE_DIRS)
    bad = tmp_path / "bad.yaml"
    bad.write_text("teacher: [1, 2\n")
    with pytest.raises(ConfigError, match="bad.yaml: not valid YAML"):
        load_config(bad)


def test_yaml_round_trip_and_hash(tmp_path: Path) -> None:
    config = load_config(profile_path("demo", PROFILE_DIRS), ["teacher.clusters=8"])
    path = tmp_path / "resolved.yaml"
    path.write_text(yaml.safe_dump(to_dict(config)))
    again = load_config(path)
    assert again == config and config_hash(again) == config_hash(config)
    assert config_hash(load_config(path, ["teacher.clusters=9"])) != config_hash(config)
    flat = flatten(to_dict(config))
    assert flat["teacher.clusters"] == 8 and flat["student.variants"] == ["baseline", "layer3+layer4", "layer4"]


def test_config_is_frozen() -> None:
    with pytest.raises(AttributeError):
        PipelineConfig().teacher.epochs = 1  # type: ignore[misc]


@pytest.mark.parametrize(("overrides", "message"), [
    (["partition.test_cluster_ids=[1, 2]", "partition.test_share=0.4"],
     r"partition.test_share: set it or partition.test_cluster_ids, not both"),
    (["teacher.origins=[HAM, BCN]", "partition.origins=[HAM, MSK]"], r"partition.origins: MSK not clustered"),
])
def test_contradicting_switches_name_the_field(overrides: list[str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        config_from_args(parse(*[a for o in overrides for a in ("--set", o)]))


def test_fidelity_switches_default_to_the_old_behaviour_and_the_paper_profile_sets_them() -> None:
    default = PipelineConfig()
    assert (default.preprocess.resize_mode, default.preprocess.border_crop) == ("center_crop", "inscribed")
    assert default.teacher.origins == default.partition.origins == () and default.partition.test_share == 0
    paper = load_config(profile_path("paper", PROFILE_DIRS))
    assert (paper.preprocess.resize_mode, paper.preprocess.border_crop) == ("stretch", "bbox_fill")
    assert paper.teacher.origins == ("HAM", "BCN", "unknown") and paper.partition.origins == ("HAM", "BCN")
    assert (paper.partition.test_clusters, paper.partition.test_share) == (8, 0.44)
    # a switch is a config value like any other: logged with the section, overridable
    flat = flatten(to_dict(paper))
    assert flat["partition.origins"] == ["HAM", "BCN"] and flat["preprocess.resize_mode"] == "stretch"
    assert config_from_args(parse("--profile", "paper", "--set", "partition.test_cluster_ids=[0, 5]",
                                  "--set", "partition.test_share=0")).partition.test_cluster_ids == (0, 5)


def test_paper_profile_compares_nine_attention_combinations_with_the_baseline() -> None:
    paper = load_config(profile_path("paper", PROFILE_DIRS))
    sets = [LayerSet.parse(v) for v in paper.student.variants]
    transfer = [s for s in sets if not s.is_baseline]
    assert len(sets) == 10 and len(set(sets)) == 10 and len(transfer) == 9
    assert sorted(len(s.layers) for s in transfer) == [1, 1, 1, 1, 2, 2, 2, 3, 3]
    # skin tune's layer grid runs exactly the same set (tune.layers_grid=true: each once per sample)
    assert paper.tune.layers == paper.student.variants
    for s in transfer:  # every transfer layer has a map larger than 1×1 at the profile's size
        check_transfer_layers(s.layers, paper.preprocess.size)
