"""Typed configuration: profiles, overrides, errors that name the field, hashing."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest
import yaml

from raytasks.settings import PROFILE_DIRS, add_config_args, config_from_args
from skin_core.config import (ConfigError, PipelineConfig, config_hash, flatten, load_config, profile_path,
                              to_dict)


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
