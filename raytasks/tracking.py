"""MLflow tracking: one parent run per pipeline, sweep or experiment, a nested child run per stage or trial.

Only the driver writes: Ray Train workers report to Ray, and the driver logs
each epoch as it is reported (live curves in the MLflow UI) and a stage's
files once they are published.  The tracking URI is ``tracking.tracking_uri``,
else ``MLFLOW_TRACKING_URI``, else a local SQLite store with a local artifact
folder beside the outputs, so ``mlflow ui`` shows everything with no server.
S3 artifact stores go through boto3 and the standard AWS credential chain
(``MLFLOW_S3_ENDPOINT_URL`` or ``AWS_ENDPOINT_URL`` for S3-compatible stores).

With ``tracking.enabled=false`` every call below is a no-op on an inert
:class:`TrackedRun`, so callers never branch on whether tracking is on.
"""

from __future__ import annotations

import contextlib
import logging
import math
import re
import shlex
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Mapping

import pandas as pd
import requests
import yaml
from mlflow.entities import Metric, Param, RunStatus
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from skin_core import storage
from skin_core.config import PipelineConfig, TrackingConfig, flatten, to_dict

logger = logging.getLogger(__name__)

LOCAL_DB, LOCAL_ARTIFACTS = "mlflow.db", "mlartifacts"
PARENT_TAG = "mlflow.parentRunId"
# Columns of a history that are wall-clock stamps, not metrics (MLflow stamps every metric it logs itself)
STAMPS = frozenset({"start_time"})


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


def metric_name(key: str) -> str:
    """MLflow allows letters, digits, _ - . space : / in names; ``AT layer3+layer4`` → ``AT layer3_layer4``."""
    return re.sub(r"[^\w\-. :/]", "_", key)


def _finite(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


@dataclass(frozen=True)
class TrackedRun:
    """One MLflow run: a parent (pipeline, sweep, experiment) or a child (stage, trial).

    The default instance is inert (tracking off): it logs nothing, and its
    ``run_id`` is empty.
    """

    client: MlflowClient | None = None
    uri: str = ""
    experiment: str = ""
    experiment_id: str = ""
    run_id: str = ""

    @property
    def enabled(self) -> bool:
        return self.client is not None

    @staticmethod
    def at(uri: str, experiment: str, experiment_id: str, run_id: str) -> "TrackedRun":
        """The run ``run_id`` at ``uri`` (inert when ``run_id`` is empty)."""
        if not run_id:
            return TrackedRun()
        return TrackedRun(MlflowClient(uri), uri, experiment, experiment_id, run_id)

    def __reduce__(self):  # noqa: ANN204 - pickling protocol
        """Pickled without its client (which holds connections): rebuilt where it is unpickled, e.g. in the
        Ray Train controller that logs epochs live."""
        return TrackedRun.at, (self.uri, self.experiment, self.experiment_id, self.run_id)

    def child(self, name: str, tags: Mapping[str, str] = ()) -> "TrackedRun":
        """A nested run under this one (inert when this one is)."""
        if not self.enabled:
            return self
        run = self.client.create_run(self.experiment_id, run_name=name, tags={PARENT_TAG: self.run_id, **dict(tags)})
        return TrackedRun(self.client, self.uri, self.experiment, self.experiment_id, run.info.run_id)

    @contextlib.contextmanager
    def nested(self, name: str, tags: Mapping[str, str] = ()) -> Iterator["TrackedRun"]:
        """A child run that ends FINISHED, or FAILED when the block raises."""
        with finishing(self.child(name, tags)) as run:
            yield run

    def log_params(self, params: Mapping[str, object]) -> None:
        if not self.enabled:
            return
        items = [Param(k, str(v)[:6000]) for k, v in params.items()]
        for start in range(0, len(items), 100):  # the server caps params per batch
            self.client.log_batch(self.run_id, params=items[start:start + 100])

    def log_metrics(self, metrics: Mapping[str, object], step: int = 0) -> None:
        """Finite numbers only (NaN, strings, lists and ``STAMPS`` are left out); names made valid for MLflow."""
        if not self.enabled:
            return
        now = int(time.time() * 1000)
        items = [Metric(metric_name(k), float(v), now, step) for k, v in metrics.items()
                 if _finite(v) and k not in STAMPS]
        for start in range(0, len(items), 1000):
            self.client.log_batch(self.run_id, metrics=items[start:start + 1000])

    def log_history(self, history: pd.DataFrame, step_column: str = "epoch") -> None:
        """Every numeric column of a per-epoch history, one step per row."""
        for _, row in history.select_dtypes("number").iterrows():
            self.log_metrics(row.drop(step_column, errors="ignore").to_dict(), step=int(row[step_column]))

    def log_files(self, uris: list[str], folder: str = "") -> None:
        """Copy published files (local or s3://) into the run's artifacts."""
        if not self.enabled:
            return
        with tempfile.TemporaryDirectory() as scratch:
            for uri in uris:
                local = Path(scratch) / uri.rsplit("/", 1)[-1]
                local.write_bytes(storage.read_bytes(uri))
                self.client.log_artifact(self.run_id, str(local), folder or None)

    def log_text(self, text: str, name: str) -> None:
        if self.enabled:
            self.client.log_text(self.run_id, text, name)

    def set_tags(self, tags: Mapping[str, str]) -> None:
        if not self.enabled:
            return
        for key, value in tags.items():
            self.client.set_tag(self.run_id, key, value)

    def finish(self, failed: bool = False) -> None:
        if self.enabled:
            self.client.set_terminated(self.run_id, RunStatus.to_string(RunStatus.FAILED if failed else RunStatus.FINISHED))

    def children(self) -> list:
        """The MLflow runs nested under this one (empty when tracking is off)."""
        if not self.enabled:
            return []
        return self.client.search_runs([self.experiment_id], f"tags.`{PARENT_TAG}` = '{self.run_id}'")

    def hint(self) -> str:
        """How to look at this run: commands that work when pasted into a shell."""
        if not self.enabled:
            return "tracking off (tracking.enabled=false)"
        if self.uri.startswith(("http://", "https://")):
            return f"open {self.uri} (run {self.run_id})"
        mlflow = shlex.quote(program_path("mlflow"))
        return (f"export MLFLOW_TRACKING_URI={shlex.quote(self.uri)}\n"
                f"{mlflow} ui --backend-store-uri \"$MLFLOW_TRACKING_URI\"   # run {self.run_id}")


def program_path(program: str) -> str:
    """``program`` from this interpreter's environment (``.venv/bin/mlflow``), relative to the cwd where inside it."""
    path = Path(sys.executable).with_name(program)
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


@contextlib.contextmanager
def finishing(run: TrackedRun) -> Iterator[TrackedRun]:
    """End ``run`` FINISHED after the block, or FAILED when it raises (KeyboardInterrupt included)."""
    try:
        yield run
    except BaseException:
        run.finish(failed=True)
        raise
    run.finish()


def open_run(config: PipelineConfig, kind: str, env: Mapping[str, str], resume: str = "") -> TrackedRun:
    """Start the parent run (``kind``: pipeline, sweep or experiment) with the whole config as params and YAML.

    ``resume``: the run id of an earlier, interrupted run of the same work (a
    sweep whose driver died); it is reopened when it exists in this experiment.
    """
    if not config.tracking.enabled:
        return TrackedRun()
    uri, artifacts = resolve_uri(config.tracking, config.out, env)
    check_reachable(uri, config.tracking.timeout_s)
    client = MlflowClient(uri)
    exp = experiment_id(client, config.tracking.experiment, artifacts)
    if resume and _reopened(client, resume, exp):
        logger.info("MLflow: resuming run %s in experiment %r at %s", resume, config.tracking.experiment, uri)
        return TrackedRun(client, uri, config.tracking.experiment, exp, resume)
    created = client.create_run(exp, run_name=f"{kind}-{config.profile}", tags={"kind": kind,
                                                                               "profile": config.profile})
    run = TrackedRun(client, uri, config.tracking.experiment, exp, created.info.run_id)
    run.log_params(flatten(to_dict(config)))
    run.log_text(yaml.safe_dump(to_dict(config), sort_keys=False), "config.yaml")
    logger.info("MLflow: run %s in experiment %r at %s", run.run_id, config.tracking.experiment, uri)
    return run


def _reopened(client: MlflowClient, run_id: str, experiment: str) -> bool:
    """Set an earlier run of ``experiment`` back to RUNNING; False when this store does not hold it."""
    try:
        if client.get_run(run_id).info.experiment_id != experiment:
            return False
        client.update_run(run_id, status=RunStatus.to_string(RunStatus.RUNNING))
        return True
    except MlflowException:
        return False


@contextlib.contextmanager
def tracked_run(config: PipelineConfig, kind: str, env: Mapping[str, str], resume: str = "") -> Iterator[TrackedRun]:
    """The parent run of a pipeline, sweep or experiment (or the reopened ``resume``); FAILED if the block raises."""
    with finishing(open_run(config, kind, env, resume)) as run:
        yield run
