"""The model registry (raytasks.registry): the champion choice and its alias, and resolving models:/ URIs.

Against the default local store (SQLite, artifacts beside it) in a temporary folder: no server, no Ray.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from mlflow import MlflowClient

from conftest import tiny_config
from raytasks.registry import Candidate, promote_if_better, register_champion, resolve_model
from raytasks.tracking import TrackedRun, open_run
from skin_core.classes import CLASSES
from skin_core.config import PreprocessConfig, TrackingConfig
from skin_core.models.bundle import CARD_FILE, ModelCard, load_bundle, save_bundle
from skin_core.models.classifier import Classifier

METRIC = "val_balanced_accuracy"


@pytest.fixture(scope="module")
def tracker(tmp_path_factory: pytest.TempPathFactory) -> TrackedRun:
    """A parent run in the default local store of a module-wide output folder."""
    return open_run(tiny_config(str(tmp_path_factory.mktemp("registry"))), "pipeline", {})


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One small trained-student bundle (ResNet-18 at 32 px) that every candidate points at."""
    folder = tmp_path_factory.mktemp("bundle")
    torch.manual_seed(0)
    save_bundle(str(folder), Classifier("resnet18", layers=()).state_dict(),
                ModelCard("resnet18", CLASSES, PreprocessConfig(size=32), "baseline"))
    return folder


def candidates(tracker: TrackedRun, bundle: Path, scores: dict[str, float]) -> list[Candidate]:
    """One candidate per name, each with its own MLflow run and student key."""
    return [Candidate(tracker.child(f"student:{name}").run_id, str(bundle), f"key-{name}", score)
            for name, score in scores.items()]


def champion(tracker: TrackedRun, name: str) -> str:
    return tracker.client.get_model_version_by_alias(name, "champion").run_id


def test_the_best_candidate_is_registered_nan_last_and_the_alias_moves_only_when_beaten(
        tracker: TrackedRun, bundle: Path) -> None:
    tracking = TrackingConfig(registered_model="champion-test")
    first = candidates(tracker, bundle, {"nan": math.nan, "low": 0.40, "best": 0.60, "mid": 0.50})
    registered = register_champion(tracker, tracking, first, METRIC)
    version = tracker.client.get_model_version("champion-test", registered.split("/")[1])
    assert version.run_id == first[2].run_id  # the argmax; NaN (listed first) is never the best
    assert float(version.tags[METRIC]) == 0.60 and champion(tracker, "champion-test") == first[2].run_id

    worse = candidates(tracker, bundle, {"worse": 0.55})
    registered_worse = register_champion(tracker, tracking, worse, METRIC)
    assert registered_worse != registered  # registered as a new version...
    assert champion(tracker, "champion-test") == first[2].run_id  # ...but the champion stays

    better = candidates(tracker, bundle, {"better": 0.70})
    register_champion(tracker, tracking, better, METRIC)
    assert champion(tracker, "champion-test") == better[0].run_id
    # the same student (same key) is not registered twice
    assert register_champion(tracker, tracking, better, METRIC) == register_champion(tracker, tracking, better,
                                                                                    METRIC)


def test_register_champion_does_nothing_without_tracking_or_candidates(tracker: TrackedRun, bundle: Path) -> None:
    assert register_champion(TrackedRun(), TrackingConfig(), [Candidate("r", str(bundle), "k", 1.0)], METRIC) == ""
    assert register_champion(tracker, TrackingConfig(registered_model="none-test"), [], METRIC) == ""


def version_of(client: MlflowClient, name: str, source: str) -> str:
    """A bare model version (no artifacts needed to test the alias)."""
    try:
        client.create_registered_model(name)
    except Exception:  # already there
        pass
    return client.create_model_version(name, source).version


def test_promote_if_better_moves_the_alias_on_a_strictly_higher_metric(tracker: TrackedRun, tmp_path: Path) -> None:
    client, name = tracker.client, "promote-test"
    v1 = version_of(client, name, str(tmp_path))
    assert promote_if_better(client, name, v1, "champion", METRIC, 0.5)  # no holder yet
    v2 = version_of(client, name, str(tmp_path))
    assert not promote_if_better(client, name, v2, "champion", METRIC, 0.5)  # a tie does not move it
    v3 = version_of(client, name, str(tmp_path))
    assert not promote_if_better(client, name, v3, "champion", METRIC, 0.4)
    assert client.get_model_version_by_alias(name, "champion").version == v1
    assert client.get_model_version(name, v3).tags[METRIC] == "0.4"  # every version keeps its score
    v4 = version_of(client, name, str(tmp_path))
    assert promote_if_better(client, name, v4, "champion", METRIC, 0.51)
    assert client.get_model_version_by_alias(name, "champion").version == v4


def test_resolve_model_downloads_the_champion_bundle(tracker: TrackedRun, bundle: Path) -> None:
    tracking = TrackingConfig(registered_model="resolve-test")
    register_champion(tracker, tracking, candidates(tracker, bundle, {"only": 0.5}), METRIC)
    folder = resolve_model("models:/resolve-test@champion", tracker.uri)
    assert (Path(folder) / CARD_FILE).is_file()
    loaded, card = load_bundle(folder)
    original, _ = load_bundle(str(bundle))
    assert card.preprocess.size == 32
    assert all(torch.equal(a, b) for a, b in zip(loaded.state_dict().values(), original.state_dict().values()))
    assert resolve_model(str(bundle)) == str(bundle)  # a folder is used as it is


def test_resolve_model_names_what_is_missing(tracker: TrackedRun, tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"models:/no-such-model@champion: not found in the model registry "
                                                r"at sqlite:"):
        resolve_model("models:/no-such-model@champion", tracker.uri)
    # a registered version whose artifacts hold no student bundle
    run = tracker.child("not-a-student")
    (tmp_path / "notes.txt").write_text("no weights here")
    tracker.client.log_artifact(run.run_id, str(tmp_path / "notes.txt"), "student")
    source = f"{tracker.client.get_run(run.run_id).info.artifact_uri}/student"
    version = version_of(tracker.client, "empty-test", source)
    with pytest.raises(FileNotFoundError, match=f"models:/empty-test/{version}: the registered model holds no "
                                                "student bundle"):
        resolve_model(f"models:/empty-test/{version}", tracker.uri)
