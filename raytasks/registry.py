"""The model registry: a trained student as an MLflow pyfunc model, and the champion alias.

The pyfunc model takes a DataFrame with a ``path`` column (file paths or
s3:// URIs) or an ``image`` column (encoded image bytes) and returns one
probability column per class plus ``error`` (empty, or why that image could not
be predicted).  Images are preprocessed exactly as in training
(``skin_core.inference``).  The alias moves to a new version only when its
validation metric beats the current holder's.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import mlflow
import mlflow.artifacts
import mlflow.pyfunc
import numpy as np
import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.models import ModelSignature
from mlflow.types import ColSpec, Schema

from raytasks.tracking import TrackedRun
from skin_core import storage
from skin_core.classes import CLASSES
from skin_core.config import TrackingConfig
from skin_core.models.bundle import CARD_FILE, WEIGHTS_FILE, bundle_folder, load_bundle
from skin_core.preprocessing import encode_png

logger = logging.getLogger(__name__)

BUNDLE = "bundle"  # the pyfunc artifact holding student.pt and model.json
MODEL_NAME = "student"  # the logged model's name inside its run
PACKAGES = ("skin_core", "raytasks")


class StudentModel(mlflow.pyfunc.PythonModel):
    """Pyfunc wrapper around a student bundle (see the module docstring)."""

    def load_context(self, context: mlflow.pyfunc.PythonModelContext) -> None:
        self.model, self.card = load_bundle(context.artifacts[BUNDLE])

    def predict(self, context, model_input: pd.DataFrame, params=None) -> pd.DataFrame:
        from skin_core.inference import predict_uris

        column = "image" if "image" in model_input and model_input["image"].notna().any() else "path"
        sources = [bytes(v) if isinstance(v, (bytes, bytearray)) else str(v) for v in model_input[column]]
        results = predict_uris(self.model, self.card, sources)
        probs = np.stack([r.probs if r.probs is not None else np.full(len(CLASSES), np.nan) for r in results])
        frame = pd.DataFrame(probs.astype(np.float64), columns=list(CLASSES))
        frame["error"] = [r.error for r in results]
        return frame


def signature() -> ModelSignature:
    inputs = Schema([ColSpec("string", "path", required=False), ColSpec("binary", "image", required=False)])
    outputs = Schema([*(ColSpec("double", c) for c in CLASSES), ColSpec("string", "error")])
    return ModelSignature(inputs=inputs, outputs=outputs)


def input_example(size: int) -> pd.DataFrame:
    """A self-contained example: one encoded skin-toned image (no file needed where the model is served)."""
    pixels = np.full((size, size, 3), (200, 150, 130), np.uint8)
    pixels[size // 4: 3 * size // 4, size // 4: 3 * size // 4] = (90, 60, 50)
    return pd.DataFrame({"image": [encode_png(pixels)]})


def _requirements() -> list[str]:
    from importlib.metadata import version

    names = ("torch", "torchvision", "numpy", "pandas", "opencv-python-headless", "mlflow", "boto3", "pyyaml")
    return [f"{n}=={version(n)}" for n in names]


KEY_TAG = "student_key"  # the student's config hash: a rerun that reuses it registers nothing new


def registered_version(client: mlflow.MlflowClient, name: str, key: str) -> str | None:
    """The version of ``name`` already holding the student with config hash ``key``, if any."""
    try:
        versions = client.search_model_versions(f"name = '{name}'")
    except MlflowException:
        return None
    return next((v.version for v in versions if v.tags.get(KEY_TAG) == key), None)


def log_student(tracking_uri: str, run_id: str, model_uri: str, registered_model: str, key: str) -> str:
    """Log a trained student as a pyfunc model in ``run_id`` and register it once per ``key``; returns its version."""
    client = mlflow.MlflowClient(tracking_uri)
    if (existing := registered_version(client, registered_model, key)) is not None:
        logger.info("%s v%s already holds this student; not registered again", registered_model, existing)
        return str(existing)
    version = _log_pyfunc(tracking_uri, run_id, model_uri, registered_model)
    client.set_model_version_tag(registered_model, version, KEY_TAG, key)
    return version


@contextlib.contextmanager
def tracking_at(uri: str | None) -> Iterator[None]:
    """MLflow's fluent API at ``uri`` for the block only: ``set_tracking_uri`` also exports
    ``MLFLOW_TRACKING_URI`` to the process (and every later subprocess), so it is put back afterwards."""
    before = os.environ.get("MLFLOW_TRACKING_URI")
    if uri:
        mlflow.set_tracking_uri(uri)
    try:
        yield
    finally:
        mlflow.set_tracking_uri(before)  # None unsets it


def _log_pyfunc(tracking_uri: str, run_id: str, model_uri: str, registered_model: str) -> str:
    with tempfile.TemporaryDirectory() as scratch:
        bundle = Path(scratch) / BUNDLE
        bundle.mkdir()
        source = bundle_folder(model_uri)
        for name in (WEIGHTS_FILE, CARD_FILE):
            (bundle / name).write_bytes(storage.read_bytes(storage.join(source, name)))
        _, card = load_bundle(str(bundle))
        code = [str(Path(__import__(p).__file__).parent) for p in PACKAGES]
        with tracking_at(tracking_uri), mlflow.start_run(run_id=run_id):
            info = mlflow.pyfunc.log_model(
                name=MODEL_NAME, python_model=StudentModel(), artifacts={BUNDLE: str(bundle)}, code_paths=code,
                signature=signature(), input_example=input_example(card.preprocess.size),
                pip_requirements=_requirements(), registered_model_name=registered_model)
    return str(info.registered_model_version)


def promote_if_better(client: mlflow.MlflowClient, name: str, version: str, alias: str, metric: str,
                      value: float) -> bool:
    """Tag the version with its metric; give it ``alias`` when the current holder has a lower one (or none)."""
    client.set_model_version_tag(name, version, metric, str(value))
    try:
        current = client.get_model_version_by_alias(name, alias)
        best = float(current.tags.get(metric, "-inf"))
    except MlflowException:  # no holder yet
        current, best = None, -np.inf
    if value <= best:
        logger.info("%s v%s: %s %.4f does not beat %s v%s (%.4f)", name, version, metric, value, alias,
                    current.version, best)
        return False
    client.set_registered_model_alias(name, alias, version)
    logger.info("%s v%s is now @%s (%s %.4f)", name, version, alias, metric, value)
    return True


@dataclass(frozen=True)
class Candidate:
    """A trained student that may become the champion: the MLflow run to log it into, its output, its score."""

    run_id: str
    folder: str
    key: str  # the student's stage key: registered once, however often a rerun reuses it
    score: float


def register_champion(tracker: TrackedRun, tracking: TrackingConfig, candidates: Sequence[Candidate],
                      metric: str) -> str:
    """Register the best candidate (NaN scores last) and move the alias when it beats the holder.

    Returns ``NAME/VERSION``, or "" when tracking is off or nothing finished.
    """
    if not tracker.enabled or not candidates:
        return ""
    best = max(candidates, key=lambda c: c.score if math.isfinite(c.score) else -math.inf)
    version = log_student(tracker.uri, best.run_id, best.folder, tracking.registered_model, best.key)
    promote_if_better(tracker.client, tracking.registered_model, version, tracking.alias, metric, best.score)
    return f"{tracking.registered_model}/{version}"


def resolve_model(uri: str, tracking_uri: str | None = None) -> str:
    """A local bundle folder for ``models:/NAME@ALIAS`` (or ``models:/NAME/VERSION``); other URIs unchanged."""
    if not uri.startswith("models:/"):
        return uri
    local = Path(tempfile.mkdtemp(prefix="skin-model-"))
    try:
        with tracking_at(tracking_uri):
            mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=str(local))
    except MlflowException as err:
        where = tracking_uri or os.environ.get("MLFLOW_TRACKING_URI", "the default tracking store")
        raise FileNotFoundError(f"{uri}: not found in the model registry at {where} "
                                f"({err.message})") from err
    found = sorted(local.rglob(CARD_FILE))
    if not found:
        raise FileNotFoundError(f"{uri}: the registered model holds no student bundle ({CARD_FILE})")
    return str(found[0].parent)
