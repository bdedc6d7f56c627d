"""MLflow tracking: one parent run per pipeline or sweep, a nested child run per stage or trial.

Only the driver writes: Ray Train workers report to Ray, and the driver logs a
stage once its outputs are published (params, per-epoch metrics from the
stage's history, its files as artifacts).  The tracking URI is
``tracking.tracking_uri``, else ``MLFLOW_TRACKING_URI``, else a local SQLite
store with a local artifact folder beside the outputs, so ``mlflow ui`` shows
everything with no server.  S3 artifact stores go through boto3 and the
standard AWS credential chain (``MLFLOW_S3_ENDPOINT_URL`` or
``AWS_ENDPOINT_URL`` for S3-compatible stores).
"""

from __future__ import annotations

import logging
import math
import re
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

import pandas as pd
import requests
import yaml
from mlflow.entities import Metric, Param, RunStatus
from mlflow.tracking import MlflowClient

from skin_core import storage
from skin_core.config import PipelineConfig, TrackingConfig, flatten, to_dict

logger = logging.getLogger(__name__)

LOCAL_DB, LOCAL_ARTIFACTS = "mlflow.db", "mlartifacts"
PARENT_TAG = "mlflow.parentRunId"


class TrackingError(ConnectionError):
    """The tracking server cannot be reached (a ConnectionError, so the CLI reports it in one line)."""


def resolve_uri(tracking: TrackingConfig, out: str, env: Mapping[str, str]) -> tuple[str, str | None]:
    """(tracking URI, artifact location for a new experiment; None lets the server decide)."""
    if tracking.tracking_uri or env.get("MLFLOW_TRACKING_URI"):
        return tracking.tracking_uri or env["MLFLOW_TRACKING_URI"], None
    # SQLite needs a local file: beside the outputs, or under ./runs when they live on S3
    folder = Path("runs" if storage.is_s3(out) else out).resolve()
    folder.mkdir(parents=True, exist_ok=True)
    artifacts = storage.join(out, LOCAL_ARTIFACTS) if storage.is_s3(out) else (folder / LOCAL_ARTIFACTS).as_uri()
    return f"sqlite:///{folder / LOCAL_DB}", artifacts


def check_reachable(uri: str, timeout_s: float) -> None:
    """TrackingError within ``timeout_s`` when an http(s) tracking server does not answer."""
    if not uri.startswith(("http://", "https://")):
        return
    try:
        requests.get(uri.rstrip("/") + "/health", timeout=timeout_s).raise_for_status()
    except requests.RequestException as err:
        raise TrackingError(f"MLflow tracking server {uri} is unreachable ({type(err).__name__}: {err}); start "
                            "it, fix tracking.tracking_uri / MLFLOW_TRACKING_URI, or set tracking.enabled=false") from err


def experiment_id(client: MlflowClient, name: str, artifact_location: str | None) -> str:
    existing = client.get_experiment_by_name(name)
    return existing.experiment_id if existing else client.create_experiment(name, artifact_location=artifact_location)


@dataclass(frozen=True)
class Tracker:
    """The parent run of one pipeline or sweep; children are stages or trials."""

    client: MlflowClient
    uri: str
    experiment: str
    experiment_id: str
    run_id: str

    def child(self, name: str, tags: Mapping[str, str] = ()) -> str:
        run = self.client.create_run(self.experiment_id, run_name=name, tags={PARENT_TAG: self.run_id, **dict(tags)})
        return run.info.run_id

    def log_params(self, run_id: str, params: Mapping[str, object]) -> None:
        items = [Param(k, str(v)[:6000]) for k, v in params.items()]
        for start in range(0, len(items), 100):  # the server caps params per batch
            self.client.log_batch(run_id, params=items[start:start + 100])

    def log_metrics(self, run_id: str, metrics: Mapping[str, float], step: int = 0) -> None:
        now = int(time.time() * 1000)
        items = [Metric(metric_name(k), float(v), now, step) for k, v in metrics.items() if _finite(v)]
        for start in range(0, len(items), 1000):
            self.client.log_batch(run_id, metrics=items[start:start + 1000])

    def log_history(self, run_id: str, history: pd.DataFrame, step_column: str = "epoch") -> None:
        """Every numeric column of a per-epoch history, one step per row."""
        numeric = history.select_dtypes("number")
        for _, row in numeric.iterrows():
            self.log_metrics(run_id, row.drop(step_column, errors="ignore").to_dict(), step=int(row[step_column]))

    def log_files(self, run_id: str, uris: list[str], folder: str = "") -> None:
        """Copy published files (local or s3://) into the run's artifacts."""
        with tempfile.TemporaryDirectory() as scratch:
            for uri in uris:
                local = Path(scratch) / uri.rsplit("/", 1)[-1]
                local.write_bytes(storage.read_bytes(uri))
                self.client.log_artifact(run_id, str(local), folder or None)

    def finish(self, run_id: str, failed: bool = False) -> None:
        status = RunStatus.to_string(RunStatus.FAILED if failed else RunStatus.FINISHED)
        self.client.set_terminated(run_id, status)


def metric_name(key: str) -> str:
    """MLflow allows letters, digits, _ - . space : / in names; ``AT layer3+layer4`` → ``AT layer3_layer4``."""
    return re.sub(r"[^\w\-. :/]", "_", key)


def _finite(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def open_tracker(config: PipelineConfig, kind: str, env: Mapping[str, str]) -> Tracker | None:
    """Start the parent run (``kind``: pipeline or sweep) with the whole config as params and YAML artifact."""
    if not config.tracking.enabled:
        return None
    uri, artifacts = resolve_uri(config.tracking, config.out, env)
    check_reachable(uri, config.tracking.timeout_s)
    client = MlflowClient(uri)
    exp = experiment_id(client, config.tracking.experiment, artifacts)
    run = client.create_run(exp, run_name=f"{kind}-{config.profile}", tags={"kind": kind, "profile": config.profile})
    tracker = Tracker(client, uri, config.tracking.experiment, exp, run.info.run_id)
    tracker.log_params(run.info.run_id, flatten(to_dict(config)))
    client.log_text(run.info.run_id, yaml.safe_dump(to_dict(config), sort_keys=False), "config.yaml")
    logger.info("MLflow: run %s in experiment %r at %s (open it with: mlflow ui --backend-store-uri %s)",
                run.info.run_id, config.tracking.experiment, uri, uri)
    return tracker


def log_stage(tracker: Tracker | None, name: str, params: Mapping[str, object], publication, reused: bool,
              history: str = "", exclude: tuple[str, ...] = ()) -> str | None:
    """A finished child run for one published stage: params, counts, per-epoch history, files as artifacts."""
    if tracker is None:
        return None
    run_id = tracker.child(name, {"stage": name.split(":")[0], "reused": str(reused).lower(),
                                  "output": publication.folder})
    tracker.log_params(run_id, params)
    tracker.log_metrics(run_id, flatten(publication.counts))
    if history:
        tracker.log_history(run_id, storage.read_csv(storage.join(publication.folder, history),
                                                     keep_default_na=True))
    tracker.log_files(run_id, [u for u in publication.uris() if not u.endswith(exclude)])
    tracker.finish(run_id)
    return run_id
