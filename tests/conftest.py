"""Fixtures shared by the whole suite: the real reference data beside the repository."""

from __future__ import annotations

import contextlib
import json
import logging
from dataclasses import replace
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Callable, Iterator

import pytest

from skin_core import storage
from skin_core.config import PipelineConfig, load_config

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``../shared/data`` (real ISIC 2019 tables and a 211-image sample); skips where absent."""
    if not (SHARED_DATA / "isic2019").is_dir():
        pytest.skip(f"real reference data not found at {SHARED_DATA} (a clone without ../shared)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def isic_sample(shared_data: Path) -> Path:
    """The 211 real ISIC 2019 training images in the challenge layout."""
    return shared_data / "isic2019" / "sample"


@pytest.fixture(scope="session")
def sample_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Images in the challenge layout for tests that need a few: the real sample where ``../shared`` is,
    else a small synthetic set (a user's clone keeps these tests instead of skipping them)."""
    if (SHARED_DATA / "isic2019" / "sample").is_dir():
        return SHARED_DATA / "isic2019" / "sample"
    from skin_core.synth import generate_dataset

    folder = tmp_path_factory.mktemp("sample") / "synthetic"
    generate_dataset(folder, n=40, size=96, seed=7)
    return folder


# Tests that use these start Ray or a server: ``-m "not slow"`` leaves them out of the fast inner loop.
SERVICE_FIXTURES = frozenset({"ray_local", "s3_server", "mlflow_server", "ray_head"})


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark ``slow`` every test that reaches a service fixture, directly or through another fixture."""
    for item in items:
        if SERVICE_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)


def tiny_config(out: str, variants: tuple[str, ...] = ("baseline", "layer3"),
                tracking: dict | None = None) -> PipelineConfig:
    """The ``smoke`` profile (every stage, a minute or two on 2 cores) writing to ``out``."""
    config = load_config(REPO_ROOT / "jobs" / "configs" / "smoke.yaml", [f"out={out}"])
    return replace(config, student=replace(config.student, variants=tuple(variants)),
                   tracking=replace(config.tracking, **(tracking or {})))


@pytest.fixture(scope="session")
def tiny_run(ray_local: None, tmp_path_factory: pytest.TempPathFactory):  # noqa: ANN201 - a PipelineResult
    """One tiny pipeline run (the smoke profile: baseline and AT layer3), shared by every test that reads one."""
    from raytasks.pipeline import run_pipeline

    return run_pipeline(tiny_config(str(tmp_path_factory.mktemp("tiny") / "run")))


def run_folder(result) -> Path:  # noqa: ANN001 - a PipelineResult
    """The output folder a pipeline run wrote (its stages' parent)."""
    return Path(result.preprocessed.publication.out.rsplit("/preprocessed/", 1)[0])


def _registered_state(checkpoints: Path, accept: Callable[[dict], bool]) -> bool:
    """Whether Ray Train's manager has recorded (not merely begun to write) a checkpoint whose state is accepted."""
    for snapshot in checkpoints.rglob("checkpoint_manager_snapshot.json"):
        recorded = snapshot.read_text()
        for state in checkpoints.rglob("checkpoint_*/state.json"):
            try:
                if state.parent.name in recorded and accept(json.loads(state.read_text())):
                    return True
            except (OSError, ValueError):  # being written or already rotated away
                continue
    return False


def _our_train_workers() -> list:
    """The Ray Train worker processes of this test session's Ray (never another user's on a shared machine)."""
    import psutil

    found = []
    for proc in psutil.Process().children(recursive=True):
        try:
            if "RayTrainWorker" in " ".join(proc.cmdline()):
                found.append(proc)
        except psutil.Error:
            continue
    return found


def _kill_after(checkpoints: Path, accept: Callable[[dict], bool], done: threading.Event, killed: list) -> None:
    while not done.is_set():
        if _registered_state(checkpoints, accept) and (workers := _our_train_workers()):
            os.kill(workers[-1].pid, signal.SIGKILL)
            killed.append(workers[-1].pid)
            return
        time.sleep(0.05)


@contextlib.contextmanager
def killing_a_train_worker(checkpoints: Path, accept: Callable[[dict], bool] = lambda state: True
                           ) -> Iterator[list[int]]:
    """SIGKILL one Ray Train worker of this session once a checkpoint under ``checkpoints`` whose ``state.json``
    ``accept`` approves is recorded; yields the killed pids (empty when the run ended first)."""
    done, killed = threading.Event(), []
    watcher = threading.Thread(target=_kill_after, args=(checkpoints, accept, done, killed), daemon=True)
    watcher.start()
    try:
        yield killed
    finally:
        done.set()
        watcher.join(timeout=10)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_for_port(port: int, proc: subprocess.Popen, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited early with code {proc.returncode}")
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise RuntimeError(f"nothing listening on 127.0.0.1:{port} after {timeout} s")


@contextlib.contextmanager
def loopback_server(command: list[str], port: int, log_path: Path, timeout: float = 30.0,
                    **popen: object) -> Iterator[str]:
    """Run ``command``, a server listening on 127.0.0.1:``port``, for the block; yields its URL."""
    with log_path.open("w") as log:
        proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, **popen)
        try:
            _wait_for_port(port, proc, timeout)
            yield f"http://127.0.0.1:{port}"
        finally:
            proc.terminate()
            proc.wait(timeout=30)


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """moto's standalone S3-compatible server on loopback; yields its endpoint URL."""
    port = _free_port()
    with loopback_server([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)], port,
                         tmp_path_factory.mktemp("moto") / "moto.log") as url:
        yield url


@pytest.fixture()
def s3_env(s3_server: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """Point the standard AWS environment at the loopback server; dummy keys only."""
    for key, value in {"AWS_ENDPOINT_URL": s3_server, "AWS_ACCESS_KEY_ID": "testing",
                       "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1",
                       "AWS_REGION": "us-east-1"}.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    storage.s3_client.cache_clear()
    yield s3_server
    storage.s3_client.cache_clear()


@pytest.fixture()
def s3_bucket(s3_env: str, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh bucket per test; yields ``s3://<bucket>``."""
    name = "t-" + "".join(c if c.isalnum() else "-" for c in request.node.name.lower())[:50].strip("-")
    storage.s3_client().create_bucket(Bucket=name)
    yield f"s3://{name}"
    storage.delete_prefix(f"s3://{name}")  # moto keeps every object (on disk beyond a few MB) until it stops


@pytest.fixture(scope="session")
def ray_local(s3_server: str) -> Iterator[None]:
    """A local 2-CPU Ray whose workers see the loopback S3 server through the AWS environment."""
    import ray

    from raytasks.runtime import use_train_env

    use_train_env()  # as init_ray does: the suite's fits run at the pipeline's settings
    env = {"AWS_ENDPOINT_URL": s3_server, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
           "AWS_DEFAULT_REGION": "us-east-1", "AWS_REGION": "us-east-1"}
    ray.init(num_cpus=2, include_dashboard=False, runtime_env={"env_vars": env}, logging_level="ERROR")
    logging.getLogger("ray.data").setLevel(logging.INFO)  # its DEBUG operator metrics drown a failure report
    try:
        yield
    finally:
        ray.shutdown()


S3_ENV = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1",
          "AWS_REGION": "us-east-1"}


@pytest.fixture(scope="session")
def mlflow_server(s3_server: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real ``mlflow server`` on loopback: SQLite backend, artifacts proxied into the loopback S3 bucket."""
    import boto3

    env = {**os.environ, **S3_ENV, "AWS_ENDPOINT_URL": s3_server, "MLFLOW_S3_ENDPOINT_URL": s3_server}
    boto3.client("s3", endpoint_url=s3_server, **{k.lower(): v for k, v in S3_ENV.items()
                                                 if k.startswith("AWS_") and "KEY" in k},
                 region_name="us-east-1").create_bucket(Bucket=MLFLOW_BUCKET)
    folder = tmp_path_factory.mktemp("mlflow")
    port = _free_port()
    with loopback_server(
            [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
             "--backend-store-uri", f"sqlite:///{folder / 'mlflow.db'}", "--artifacts-destination",
             f"s3://{MLFLOW_BUCKET}/artifacts"], port, folder / "server.log", timeout=90, env=env) as url:
        yield url


MLFLOW_BUCKET = "mlflow-store"
