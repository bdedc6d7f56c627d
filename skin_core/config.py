"""Typed, frozen configuration for every stage, loaded from YAML and overridable.

A profile is a YAML file (``jobs/configs/<name>.yaml``) holding any subset of the
fields below; the dataclass defaults are the ``paper`` profile's method settings
(which of them the paper states is in ``docs/paper-fidelity.md``).  Overrides use
dotted keys (``teacher.epochs=3``) whose values are parsed as YAML scalars.
Unknown keys and wrongly typed values fail with the dotted field name, so a typo
never silently falls back to a default.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence, TypeVar

import yaml

from skin_core.classes import ORIGINS
from skin_core.layers import LayerSet

T = TypeVar("T")

IMBALANCE_MODES = ("none", "weighted_ce", "sqrt_weighted_ce")  # student.imbalance (skin_core.training.student.class_weights)


class ConfigError(ValueError):
    """A configuration file, key or value that cannot be used."""


@dataclass(frozen=True)
class DataConfig:
    """Where the ISIC-layout dataset lives; an empty path means the synthetic default."""

    path: str = ""
    synthetic_n: int = 600
    synthetic_size: int = 256
    synthetic_seed: int = 0
    require_path: bool = False  # true for profiles meant for real data: no silent fall-back to the synthetic set


# the keys of skin_core.preprocessing.color.COLOR_CONSTANCY (not imported: config stays free of OpenCV)
COLOR_CONSTANCY_METHODS: tuple[str, ...] = ("none", "shades_of_gray")
# skin_core.preprocessing.resize.MODES and .border.CROPS, for the same reason
RESIZE_MODES: tuple[str, ...] = ("center_crop", "pad", "stretch")
BORDER_CROPS: tuple[str, ...] = ("inscribed", "bbox_fill")


def _check_choice(where: str, value: str, choices: Sequence[str]) -> None:
    if value not in choices:
        raise ConfigError(f"{where}: {value!r}; use {' or '.join(choices)}")


def _check_origins(where: str, origins: Sequence[str]) -> None:
    """Known origins, each once; empty means every origin."""
    unknown = [o for o in origins if o not in ORIGINS]
    if unknown or len(set(origins)) != len(origins):
        raise ConfigError(f"{where}: {list(origins)!r}; list origins from {', '.join(ORIGINS)}, each once "
                          "(an empty list means all of them)")


@dataclass(frozen=True)
class PreprocessConfig:
    """Per-image preprocessing: decode, black-edge removal, colour constancy, square resize."""

    size: int = 224
    min_side: int = 32
    remove_borders: bool = True
    # inscribed: the largest rectangle inside the field of view; bbox_fill: its bounding box, outside filled
    border_crop: str = "inscribed"
    resize_mode: str = "center_crop"  # center_crop | pad | stretch (the whole image squeezed to the square)
    batch_size: int = 32  # images per Ray task: smaller pays task overhead, larger balances worse
    color_constancy: str = "none"  # none | shades_of_gray (Finlayson & Trezzi 2004, as in the ISIC 2019 winners)
    sog_power: float = 6.0  # Minkowski norm p of Shades of Gray: 1 is Grey World, 6 the usual choice

    def __post_init__(self) -> None:
        _check_choice("preprocess.color_constancy", self.color_constancy, COLOR_CONSTANCY_METHODS)
        _check_choice("preprocess.resize_mode", self.resize_mode, RESIZE_MODES)
        _check_choice("preprocess.border_crop", self.border_crop, BORDER_CROPS)
        if not self.sog_power >= 1 or self.sog_power == float("inf"):
            raise ConfigError(f"preprocess.sog_power: {self.sog_power!r}; the Minkowski norm must be a finite "
                              "number >= 1")


@dataclass(frozen=True)
class AugmentConfig:
    """Batch augmentation on the training worker (``skin_core.data.augment``); the defaults are flips only.

    Colour factors follow torchvision's ``ColorJitter``: a factor uniform in
    ``[max(0, 1 - v), 1 + v]`` for brightness, contrast and saturation, a hue shift
    uniform in ``[-hue, hue]`` of a full turn. ``crop_scale`` is the area range of a
    random resized crop ((1, 1) disables it), ``crop_ratio`` its width/height range,
    ``rotation`` the largest angle in degrees (uniform in ±rotation).
    """

    flips: bool = True  # horizontal/vertical flips and 90° turns: a lesion has no canonical orientation
    crop_scale: tuple[float, float] = (1.0, 1.0)
    crop_ratio: tuple[float, float] = (0.75, 1.3333)
    rotation: float = 0.0
    brightness: float = 0.0
    contrast: float = 0.0
    saturation: float = 0.0
    hue: float = 0.0

    def __post_init__(self) -> None:
        _check_range("augment.crop_scale", self.crop_scale, upper=1.0)
        _check_range("augment.crop_ratio", self.crop_ratio, upper=float("inf"))
        if not 0 <= self.rotation <= 180:
            raise ConfigError(f"augment.rotation: {self.rotation!r}; give the largest angle in degrees, 0 to 180")
        for name in ("brightness", "contrast", "saturation"):
            value = getattr(self, name)
            if not 0 <= value < float("inf"):
                raise ConfigError(f"augment.{name}: {value!r}; the jitter must be a finite number >= 0")
        if not 0 <= self.hue <= 0.5:
            raise ConfigError(f"augment.hue: {self.hue!r}; the shift is a fraction of a turn, 0 to 0.5")


def _check_range(where: str, bounds: tuple[float, ...], upper: float) -> None:
    """``bounds`` is ``(low, high)`` with ``0 < low <= high <= upper``."""
    if len(bounds) != 2 or not 0 < bounds[0] <= bounds[1] <= upper or bounds[1] == float("inf"):
        limit = f" <= {upper:g}" if upper < float("inf") else ""
        raise ConfigError(f"{where}: {list(bounds)!r}; expected [low, high] with 0 < low <= high{limit}")


@dataclass(frozen=True)
class ModelConfig:
    """The ResNet backbone shared by teacher and student."""

    arch: str = "resnet50"
    weights: str = "none"  # none | imagenet | path to a local state dict
    embedding_dim: int = 128


@dataclass(frozen=True)
class TeacherConfig:
    """DeepCluster with the Multi-Similarity loss (the metric teacher)."""

    epochs: int = 100
    clusters: int = 16
    pca_dim: int = 256
    batch_size: int = 64  # global: split over the training workers
    lr: float = 0.01
    ms_alpha: float = 2.0
    ms_beta: float = 50.0
    ms_base: float = 1.0  # the MS paper's lambda; pytorch-metric-learning defaults to 0.5
    miner_epsilon: float = 0.1
    origins: tuple[str, ...] = ()  # the origins clustered and trained on; empty = all (the paper leaves out MSK)

    def __post_init__(self) -> None:
        _check_origins("teacher.origins", self.origins)


@dataclass(frozen=True)
class PartitionConfig:
    """Cluster-aware split: whole clusters held out as test.

    The test clusters are ``test_cluster_ids`` when given; else, with
    ``test_share`` > 0, the ``test_clusters`` clusters (any number when 0) whose
    test set comes closest to that share of the partition's images; else
    ``test_clusters`` clusters drawn at random.  Every rule keeps each class in
    train and validation.  Only clustered images of ``origins`` (every clustered
    one when empty) enter the partition, in any split; the rest have no row, so
    they never reach the student, not even as test.
    """

    test_clusters: int = 8
    test_cluster_ids: tuple[int, ...] = ()
    test_share: float = 0.0  # 0 = not aimed at; the paper's test is about 0.44 of its images
    origins: tuple[str, ...] = ()  # the student's train, val and test origins; empty = every clustered one
    val_fraction: float = 0.2
    seed: int = 0
    # share of lesions reserved as a ``holdout`` split before the cluster split (a sweep's fixed ranking set); 0: none
    holdout_fraction: float = 0.0

    def __post_init__(self) -> None:
        _check_origins("partition.origins", self.origins)
        if not 0.0 <= self.holdout_fraction < 1.0:
            raise ConfigError(f"partition.holdout_fraction: {self.holdout_fraction!r}; use 0 (none) up to below 1")
        if self.test_clusters < 0 or (self.test_clusters == 0 and not self.test_share and not self.test_cluster_ids):
            raise ConfigError(f"partition.test_clusters: {self.test_clusters}; give a count >= 1 (0, any count, "
                              "only with partition.test_share)")
        ids = self.test_cluster_ids
        if any(i < 0 for i in ids) or len(set(ids)) != len(ids):
            raise ConfigError(f"partition.test_cluster_ids: {list(ids)!r}; give distinct cluster ids >= 0")
        if not 0 <= self.test_share < 1:
            raise ConfigError(f"partition.test_share: {self.test_share!r}; give a share in (0, 1), or 0 for none")
        if ids and self.test_share:
            raise ConfigError("partition.test_share: set it or partition.test_cluster_ids, not both")
        if not 0 < self.val_fraction < 1:
            raise ConfigError(f"partition.val_fraction: {self.val_fraction!r}; give a fraction in (0, 1)")


@dataclass(frozen=True)
class StudentConfig:
    """Cross-entropy plus attention transfer from the frozen teacher."""

    epochs: int = 100
    batch_size: int = 64  # global: split over the training workers
    lr: float = 0.01  # peak rate of SGD with Nesterov momentum 0.9: linear warm-up, then cosine to 0, per step
    warmup_epochs: int = 0
    weight_decay: float = 1e-4
    at_beta: float = 1000.0  # β of the reference code: loss = CE + β/2 · Σ_layers AT
    # "baseline" (β = 0, no teacher) and attention-transfer layer sets such as "layer3+layer4"
    variants: tuple[str, ...] = ("baseline", "layer3+layer4")
    imbalance: str = "none"  # none | weighted_ce | sqrt_weighted_ce; the paper does not correct the imbalance
    select_metric: str = "balanced_accuracy"  # validation metric that picks the kept epoch: accuracy | balanced_accuracy | macro_f1
    val_split: str = "val"  # the split that picks the kept epoch: val (the cluster partition's) | holdout (sweeps)

    def __post_init__(self) -> None:
        for variant in self.variants:
            try:
                LayerSet.parse(variant)
            except ValueError as err:
                raise ConfigError(f"student.variants: {err}") from None
        if self.select_metric not in ("accuracy", "balanced_accuracy", "macro_f1"):
            raise ConfigError(f"student.select_metric: {self.select_metric!r}; use accuracy, balanced_accuracy "
                              "or macro_f1")
        if self.imbalance not in IMBALANCE_MODES:
            raise ConfigError(f"student.imbalance: {self.imbalance!r}; use {', '.join(IMBALANCE_MODES)}")
        if self.val_split not in ("val", "holdout"):
            raise ConfigError(f"student.val_split: {self.val_split!r}; use val or holdout")


@dataclass(frozen=True)
class ResourcesConfig:
    """Ray resources; fractional CPUs keep Ray Data alive next to training workers."""

    num_workers: int = 0  # 0 = auto: one worker per GPU, else one per CPU node using all its cores
    use_gpu: bool = False
    cpus_per_worker: float = 1.0  # Ray's reservation; a CPU worker's torch threads are its node's cores
    data_cpus: float = 1.0  # CPUs that must stay free for Ray Data next to the training workers
    max_failures: int = 2  # worker-group restarts Ray Train may make, each resuming from a checkpoint

    def __post_init__(self) -> None:
        if self.num_workers < 0:
            raise ConfigError(f"resources.num_workers: {self.num_workers}; use 0 (auto) or a positive count")
        if not self.cpus_per_worker > 0 or self.data_cpus < 0:
            raise ConfigError("resources.cpus_per_worker must be > 0 and resources.data_cpus >= 0")


@dataclass(frozen=True)
class TrackingConfig:
    """MLflow.  An empty URI means ``MLFLOW_TRACKING_URI``, else a local SQLite store beside the outputs."""

    enabled: bool = True
    tracking_uri: str = ""
    experiment: str = "skin-lesion"
    registered_model: str = "skin-lesion-student"  # the best student's name in the model registry
    alias: str = "champion"  # moved to a new version only when it beats the current holder
    timeout_s: float = 10.0  # an unreachable server fails within this, instead of hanging


@dataclass(frozen=True)
class TuneConfig:
    """Ray Tune search; each list is the set of choices (one value fixes the parameter)."""

    num_samples: int = 8
    max_concurrent: int = 1  # trials at once; each takes ``resources`` for its Ray Train workers
    grace_period: int = 1  # epochs before ASHA may stop a trial
    search: str = "optuna"  # optuna (TPE, model-based) | random
    seed: int = 0  # the search algorithm's seed: the same sweep draws the same trials
    rank_fraction: float = 0.2  # share of lesions in the fixed hold-out that ranks every trial (never trained on)
    drop_invalid: bool = False  # drop impossible values (logged) instead of refusing the whole space
    start_from_profile: bool = False  # the first trial runs the profile's own values: did the search beat them?
    ms_alpha: tuple[float, ...] = (1.0, 2.0, 4.0)
    ms_beta: tuple[float, ...] = (20.0, 50.0)
    ms_base: tuple[float, ...] = (0.5, 1.0)
    miner_epsilon: tuple[float, ...] = (0.1,)
    clusters: tuple[int, ...] = (8, 16, 32)
    layers: tuple[str, ...] = ()  # AT layer sets; empty means all 15 non-empty subsets of layer1..layer4
    layers_grid: bool = False  # every layer set once per sample (the paper's comparison) instead of a random draw
    at_beta: tuple[float, ...] = (500.0, 1000.0, 2000.0)
    lr: tuple[float, ...] = (0.003, 0.03)  # log-uniform between the two bounds; one value fixes it

    def __post_init__(self) -> None:
        if self.num_samples < 1 or self.max_concurrent < 1:
            raise ConfigError("tune.num_samples and tune.max_concurrent must be >= 1")
        if not 1 <= len(self.lr) <= 2:
            raise ConfigError(f"tune.lr: one value or [low, high], got {list(self.lr)}")
        for name in ("ms_alpha", "ms_beta", "ms_base", "miner_epsilon", "clusters", "at_beta"):
            if not getattr(self, name):
                raise ConfigError(f"tune.{name}: give at least one value")
        StudentConfig(variants=self.layers)  # the same check as student.variants
        if self.search not in ("optuna", "random"):
            raise ConfigError(f"tune.search: {self.search!r}; use optuna or random")
        if not 0.0 < self.rank_fraction < 1.0:
            raise ConfigError(f"tune.rank_fraction: {self.rank_fraction!r}; the ranking hold-out's share of lesions "
                              "must be above 0 and below 1")


@dataclass(frozen=True)
class ExperimentConfig:
    """``skin experiment``: the pipeline once per seed, then one comparison with confidence intervals."""

    seeds: tuple[int, ...] = (0, 1, 2)  # each moves the teacher, the partition and the students' initialisation
    fixed_partition: bool = False  # keep the first seed's teacher and partition; only the students' seed moves
    n_boot: int = 2000  # bootstrap replicates of the paired AT − baseline interval
    external_data: str = ""  # a dataset from other acquisitions, evaluated by origin (cross-acquisition check)

    def __post_init__(self) -> None:
        if not self.seeds or len(set(self.seeds)) != len(self.seeds):
            raise ConfigError(f"experiment.seeds: give distinct seeds, got {list(self.seeds)}")
        if self.n_boot < 100:
            raise ConfigError(f"experiment.n_boot: {self.n_boot}; use at least 100 replicates")


@dataclass(frozen=True)
class PipelineConfig:
    """The whole pipeline: one section per stage."""

    profile: str = "paper"
    out: str = "runs/paper"
    seed: int = 0
    data: DataConfig = field(default_factory=DataConfig)
    preprocess: PreprocessConfig = field(default_factory=PreprocessConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    teacher: TeacherConfig = field(default_factory=TeacherConfig)
    partition: PartitionConfig = field(default_factory=PartitionConfig)
    student: StudentConfig = field(default_factory=StudentConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)  # the student's training augmentation
    resources: ResourcesConfig = field(default_factory=ResourcesConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    tune: TuneConfig = field(default_factory=TuneConfig)
    experiment: ExperimentConfig = field(default_factory=ExperimentConfig)

    def __post_init__(self) -> None:
        # only clustered images can be partitioned: an empty partition.origins means every clustered one
        clustered, used = self.teacher.origins, self.partition.origins
        missing = [o for o in used if clustered and o not in clustered]
        if missing:
            raise ConfigError(f"partition.origins: {', '.join(missing)} not clustered (teacher.origins is "
                              f"{list(clustered)}); list only clustered origins")
        if self.student.val_split == "holdout" and self.partition.holdout_fraction == 0:
            raise ConfigError("student.val_split=holdout needs partition.holdout_fraction > 0")


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """Check ``value`` against annotation ``tp``; ints widen to float, lists become tuples."""
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, Mapping):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return from_dict(tp, value, prefix=f"{where}.")
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        inner = typing.get_args(tp)[0]
        return tuple(_coerce(v, inner, f"{where}[{i}]") for i, v in enumerate(value))
    if origin in (typing.Union, types.UnionType):
        return value
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    wrong_bool = isinstance(value, bool) and tp is not bool  # YAML "yes" must not become 1
    if wrong_bool or not isinstance(value, tp):
        raise ConfigError(f"{where}: expected {tp.__name__}, got {value!r}")
    return value


def from_dict(cls: type[T], data: Mapping[str, Any], prefix: str = "") -> T:
    """Build dataclass ``cls`` from a mapping, rejecting unknown keys and wrong types."""
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigError(f"unknown config field(s) {', '.join(prefix + k for k in unknown)}; "
                          f"known: {', '.join(sorted(prefix + n for n in names))}")
    kwargs = {k: _coerce(v, hints[k], prefix + k) for k, v in data.items()}
    return cls(**kwargs)


def to_dict(config: Any) -> dict[str, Any]:
    """Plain nested dict (tuples as lists) for YAML, JSON and MLflow."""
    return json.loads(json.dumps(dataclasses.asdict(config)))


def config_hash(config: Any) -> str:
    """Stable short hash of a config section (or a plain JSON-able dict), keyed on its content."""
    data = to_dict(config) if dataclasses.is_dataclass(config) else config
    blob = json.dumps(data, sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def flatten(data: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` → ``{"a.b": 1}``, the shape MLflow params want."""
    flat: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, Mapping):
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def apply_overrides(data: dict[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """Apply ``a.b=value`` overrides (values parsed as YAML) to a nested dict copy."""
    result = json.loads(json.dumps(data))
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"override {item!r}: expected KEY=VALUE, e.g. teacher.epochs=3")
        node = result
        *parents, leaf = key.strip().split(".")
        for part in parents:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {item!r}: {part} is not a section")
        node[leaf] = yaml.safe_load(raw)
    return result


def profile_path(profile: str, search_dirs: Sequence[Path] = ()) -> Path:
    """Resolve a profile name (``demo``) or a YAML path to an existing file."""
    candidate = Path(profile)
    if candidate.suffix in (".yaml", ".yml"):
        if candidate.is_file():
            return candidate
        raise ConfigError(f"config file not found: {candidate}")
    for folder in search_dirs:
        path = folder / f"{profile}.yaml"
        if path.is_file():
            return path
    looked = ", ".join(str(d) for d in search_dirs) or "(no folders)"
    raise ConfigError(f"unknown profile {profile!r}: no {profile}.yaml in {looked}")


def load_config(path: Path, overrides: Sequence[str] = (), cls: type[T] = PipelineConfig) -> T:  # type: ignore[assignment]
    """Load a YAML profile, apply overrides and return the typed, frozen config."""
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {err}") from err
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    return from_dict(cls, apply_overrides(data, overrides))
