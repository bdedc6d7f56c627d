"""Checking a Tune search space against the configuration and the data before any trial starts.

Every value the space can produce is checked: transfer-layer sets against the
image size (``check_transfer_layers``), the cluster count K against the
partition and the number of images, the loss weights and the learning-rate
bounds against their domains, and the data against the ranking hold-out.  The
problems come back as one list; ``checked_space`` refuses them in one line
(``ConfigError``) or, with ``tune.drop_invalid``, drops the impossible values
from their lists and logs what it dropped.  Bounds (``tune.lr``,
``tune.grace_period``) and data problems cannot be dropped.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, replace
from typing import Mapping

import pandas as pd

from skin_core.classes import CLASSES
from skin_core.config import ConfigError, PipelineConfig
from skin_core.layers import LayerSet, all_layer_sets
from skin_core.models import check_transfer_layers
from skin_core.partitioning.clusters import MIN_LESIONS_OUTSIDE, ranking_holdout
from skin_core.partitioning.holdout import lesion_classes

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Problem:
    """One impossible value: where it is, the value, and why."""

    field: str
    value: object
    reason: str
    droppable: bool = True  # a value of a choice list (the rest of the list still searches)



@dataclass(frozen=True)
class DataFacts:
    """What the checks need from the dataset: its image count and its lesions per class outside the hold-out."""

    images: int
    lesions_outside_holdout: Mapping[str, int]


def data_facts(frame: pd.DataFrame, rank_fraction: float) -> DataFacts:
    """From the preprocessed rows (``lesion_id``, ``label``): the facts for ``space_problems``."""
    rest = frame[~ranking_holdout(frame, rank_fraction)]
    counts = lesion_classes(rest["lesion_id"], rest["label"]).value_counts()
    return DataFacts(len(frame), {str(k): int(v) for k, v in counts.items()})


def _positive(value: float) -> bool:
    return math.isfinite(value) and value > 0


def _non_negative(value: float) -> bool:
    return math.isfinite(value) and value >= 0


def layer_problems(config: PipelineConfig) -> list[Problem]:
    """Layer sets whose transfer term would always be 0 at ``preprocess.size``."""
    problems = []
    for variant in config.tune.layers or all_layer_sets():
        try:
            check_transfer_layers(LayerSet.parse(variant).layers, config.preprocess.size)
        except ValueError:
            problems.append(Problem("tune.layers", variant, f"a 1×1 feature map at {config.preprocess.size} px"))
    return problems


def cluster_problems(config: PipelineConfig, data: DataFacts | None) -> list[Problem]:
    """K values k-means or the cluster partition cannot use."""
    problems = []
    for k in config.tune.clusters:
        if k <= config.partition.test_clusters:
            problems.append(Problem("tune.clusters", k, f"not above partition.test_clusters="
                                                        f"{config.partition.test_clusters}"))
        elif data is not None and k > data.images:
            problems.append(Problem("tune.clusters", k, f"more clusters than the {data.images} images"))
    return problems


# choice lists and the domain of each value
DOMAINS = {"ms_alpha": (_positive, "must be > 0"), "ms_beta": (_positive, "must be > 0"),
           "ms_base": (math.isfinite, "must be finite"), "miner_epsilon": (_non_negative, "must be >= 0"),
           "at_beta": (_non_negative, "must be >= 0")}


def value_problems(config: PipelineConfig) -> list[Problem]:
    """Loss weights outside their domain, and bounds that no search can use."""
    t = config.tune
    problems = [Problem(f"tune.{name}", value, reason) for name, (ok, reason) in DOMAINS.items()
                for value in getattr(t, name) if not ok(value)]
    low, high = t.lr[0], t.lr[-1]
    if not (_positive(low) and _positive(high) and low <= high):
        problems.append(Problem("tune.lr", list(t.lr), "needs 0 < low <= high", droppable=False))
    if t.grace_period > config.student.epochs + 1:
        problems.append(Problem("tune.grace_period", t.grace_period, f"above the {config.student.epochs} "
                                                                     "student epochs", droppable=False))
    return problems


def data_problems(data: DataFacts) -> list[Problem]:
    """Classes the cluster partition can never place in both train and validation, in any trial."""
    return [Problem("data", name, f"{data.lesions_outside_holdout.get(name, 0)} lesion(s) outside the ranking "
                                  f"hold-out; the partition needs {MIN_LESIONS_OUTSIDE} per class", droppable=False)
            for name in CLASSES if data.lesions_outside_holdout.get(name, 0) < MIN_LESIONS_OUTSIDE]


TEACHER_PARAMS = ("ms_alpha", "ms_beta", "ms_base", "miner_epsilon", "clusters")  # teacher.X is searched as tune.X


def profile_point(config: PipelineConfig) -> dict:
    """The profile's own values of the searched parameters (its first attention-transfer variant)."""
    variants = [v for v in config.student.variants if not LayerSet.parse(v).is_baseline]
    return {**{name: getattr(config.teacher, name) for name in TEACHER_PARAMS}, "at_beta": config.student.at_beta,
            "variant": variants[0] if variants else "", "lr": config.student.lr}


def with_profile_values(config: PipelineConfig) -> PipelineConfig:
    """With ``tune.start_from_profile``: each choice list holding the profile's value too."""
    t = config.tune
    if not t.start_from_profile:
        return config
    point = profile_point(config)
    lists = {name: getattr(t, name) for name in (*TEACHER_PARAMS, "at_beta")}
    if t.layers and point["variant"]:
        lists["layers"] = t.layers
    grown = {name: (*values, point["variant" if name == "layers" else name])
             for name, values in lists.items() if point["variant" if name == "layers" else name] not in values}
    return replace(config, tune=replace(t, **grown))


def profile_problems(config: PipelineConfig) -> list[Problem]:
    """Why the profile's own values cannot be the first trial."""
    t, point = config.tune, profile_point(config)
    problems = []
    if not point["variant"]:
        problems.append(Problem("tune.start_from_profile", "student.variants", "the profile has no "
                                "attention-transfer variant to start from", droppable=False))
    if not t.lr[0] <= point["lr"] <= t.lr[-1]:
        problems.append(Problem("tune.start_from_profile", f"student.lr={point['lr']}", f"outside tune.lr "
                                f"{list(t.lr)}", droppable=False))
    if t.layers_grid:
        problems.append(Problem("tune.start_from_profile", "tune.layers_grid", "a grid has no first point",
                                droppable=False))
    return problems


def space_problems(config: PipelineConfig, data: DataFacts | None = None) -> list[Problem]:
    """Every impossible value of ``config.tune`` (and, given the data's facts, every data problem)."""
    problems = [*layer_problems(config), *cluster_problems(config, data), *value_problems(config),
                *(data_problems(data) if data is not None else [])]
    if not config.tune.start_from_profile:
        return problems
    point = profile_point(config)
    own = {f"tune.{name}": value for name, value in point.items()} | {"tune.layers": point["variant"]}
    # the first trial needs the profile's own values: those cannot be dropped
    return [replace(p, reason=f"{p.reason}; the profile's own value", droppable=False) if own.get(p.field) == p.value
            else p for p in problems] + profile_problems(config)


def _kept_values(config: PipelineConfig, problems: list[Problem]) -> dict[str, tuple]:
    """For each ``tune`` list with a problem: its values without the impossible ones."""
    kept = {}
    for name in {p.field.split(".", 1)[1] for p in problems}:
        values = getattr(config.tune, name) or tuple(all_layer_sets())  # an empty layer list means all 15 sets
        kept[name] = tuple(v for v in values if v not in {p.value for p in problems if p.field == f"tune.{name}"})
    return kept


def listed(problems: list[Problem]) -> str:
    """One line: ``tune.layers layer4, layer3+layer4 (a 1×1 feature map at 32 px); tune.lr ...``."""
    groups: dict[tuple[str, str], list[str]] = {}
    for p in problems:
        groups.setdefault((p.field, p.reason), []).append(str(p.value))
    return "; ".join(f"{field} {', '.join(values)} ({reason})" for (field, reason), values in groups.items())


def checked_space(config: PipelineConfig, data: DataFacts | None = None) -> PipelineConfig:
    """``config`` when its space is possible; with ``tune.drop_invalid``, without its impossible values.

    ConfigError (one line, every problem listed) otherwise, or when dropping
    would leave a list empty.
    """
    config = with_profile_values(config)
    problems = space_problems(config, data)
    if not problems:
        return config
    line = listed(problems)
    if config.tune.drop_invalid and all(p.droppable for p in problems):
        kept = _kept_values(config, problems)
        empty = sorted(f"tune.{name}" for name, values in kept.items() if not values)
        if not empty:
            logger.warning("tune.drop_invalid: dropped from the search space: %s", line)
            return replace(config, tune=replace(config.tune, **kept))
        line += f"; nothing valid is left in {', '.join(empty)}"
    hint = "" if config.tune.drop_invalid else "; remove them, or set tune.drop_invalid=true to drop them"
    raise ConfigError(f"impossible values in the search space, no trial started: {line}{hint}")
