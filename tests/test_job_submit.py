"""``ray job submit`` end to end: a real local head with token auth, the real CLI, the smoke profile."""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Iterator

import pytest
from mlflow import MlflowClient

from conftest import REPO_ROOT, _free_port

RAY = str(Path(sys.executable).with_name("ray"))


def head_env(**extra: str) -> dict:
    """A client (and head) environment with token auth on and a fresh token."""
    # the job's `python` is the head's: put this environment's first, as a cluster image does
    env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(16),
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}", **extra}
    for inherited in ("RAY_ADDRESS", "MLFLOW_TRACKING_URI"):  # the job must find its own defaults
        env.pop(inherited, None)
    return env


def start_head(temp: Path, env: dict, *options: str) -> str:
    """``ray start --head`` on loopback with its own temp dir and free ports; returns the dashboard address once
    it takes jobs."""
    dashboard = _free_port()
    start = [RAY, "start", "--head", "--node-ip-address=127.0.0.1", "--include-dashboard=true",
             "--dashboard-host=127.0.0.1", f"--dashboard-port={dashboard}", f"--temp-dir={temp}",
             "--disable-usage-stats",
             # every other fixed port gets a free one: another Ray on this machine holds the defaults
             *(f"--{name}={_free_port()}" for name in ("dashboard-agent-listen-port", "dashboard-agent-grpc-port",
                                                       "runtime-env-agent-port", "metrics-export-port",
                                                       "ray-client-server-port")), *options]
    address = f"http://127.0.0.1:{dashboard}"
    try:  # a head that failed halfway still leaves processes to stop
        started = subprocess.run(start, env=env, capture_output=True, text=True, timeout=180)
        assert started.returncode == 0, started.stderr[-3000:]
        _wait_for_job_agent(address, env)
    except BaseException:
        stop_head(temp)
        raise
    return address


@contextlib.contextmanager
def head_temp_dir() -> Iterator[Path]:
    """A short temp dir for a head, removed after it: Ray's socket paths under it must stay within 107 bytes,
    which pytest's own temp paths outgrow."""
    temp = Path(tempfile.mkdtemp(prefix="rayhead-", dir="/tmp"))
    try:
        yield temp
    finally:
        shutil.rmtree(temp, ignore_errors=True)


@pytest.fixture(scope="module")
def ray_head() -> Iterator[tuple[str, dict]]:
    """A 2-CPU head on loopback with token auth; yields (dashboard address, client environment)."""
    env = head_env()
    with head_temp_dir() as temp:
        address = start_head(temp, env, f"--port={_free_port()}", "--num-cpus=2")
        try:
            yield address, env
        finally:
            stop_head(temp)


def stop_head(temp: Path) -> None:
    """Stop this head only (``ray stop`` would also stop the suite's other Ray): every process whose
    command line names its temp dir, with their children."""
    import psutil

    def named(proc: psutil.Process) -> bool:
        try:
            return str(temp) in " ".join(proc.cmdline())
        except psutil.Error:
            return False

    roots = [proc for proc in psutil.process_iter() if named(proc)]
    procs = {p for root in roots for p in [root, *_children(root)]}
    for proc in procs:
        with contextlib.suppress(psutil.Error):
            proc.terminate()
    # gcs_server and one of the head's Python processes outlive SIGTERM by more than 15 s (measured): a test's
    # head needs no graceful shutdown, so they get 3 s before SIGKILL
    _, alive = psutil.wait_procs(procs, timeout=3)
    for proc in alive:
        with contextlib.suppress(psutil.Error):
            proc.kill()


def _children(proc) -> list:
    import psutil

    try:
        return proc.children(recursive=True)
    except psutil.Error:
        return []


def _wait_for_job_agent(address: str, env: dict, timeout: float = 120) -> None:
    """The dashboard answers before its job agent registers; go on once a trivial job is accepted."""
    deadline = time.monotonic() + timeout
    while True:
        probe = subprocess.run([RAY, "job", "submit", "--address", address, "--", "true"], env=env,
                               capture_output=True, text=True, timeout=120)
        if probe.returncode == 0:
            return
        assert time.monotonic() < deadline, probe.stderr[-2000:]
        time.sleep(2)


def submit(address: str, env: dict, out: Path, *options: str, working_dir: bool = True
           ) -> subprocess.CompletedProcess:
    """The smoke pipeline as a user submits it (``options`` go to jobs/pipeline.py); ``working_dir=False`` runs
    the installed project instead of shipping the code as the job's working directory."""
    code = (["--working-dir", str(REPO_ROOT), "--runtime-env", str(REPO_ROOT / "jobs" / "runtime_env.yaml"), "--",
             "python", "jobs/pipeline.py"] if working_dir else
            ["--runtime-env-json", '{"env_vars": {"PYTHONUNBUFFERED": "1"}}', "--",
             "python", str(REPO_ROOT / "jobs" / "pipeline.py")])
    command = [RAY, "job", "submit", "--address", address, *code, "--profile", "smoke", "--out", str(out), *options]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=900, cwd=REPO_ROOT)


def succeeded(stdout: str) -> bool:
    return re.search(r"Job 'raysubmit_\w+' succeeded", stdout) is not None


def stage_status(stdout: str) -> dict[str, str]:
    """The pipeline's stage list, ``name ran|reused folder`` one per line, as {name: ran | reused}."""
    lines = stdout.splitlines()
    listed = {}
    for line in lines[lines.index("stages") + 1:]:
        words = line.split()
        if len(words) < 2 or words[1] not in ("ran", "reused"):
            break
        listed[words[0]] = words[1]
    return listed


def test_a_client_without_the_token_is_refused(ray_head: tuple[str, dict]) -> None:
    address, env = ray_head
    wrong = {**env, "RAY_AUTH_TOKEN": "not-the-token"}
    listed = subprocess.run([RAY, "job", "list", "--address", address], env=wrong, capture_output=True, text=True,
                            timeout=120)
    assert listed.returncode != 0
    assert "auth" in (listed.stdout + listed.stderr).lower()


@pytest.mark.timeout(1500)
def test_submitted_pipeline_succeeds_registers_the_model_and_reruns_from_reused_stages(
        ray_head: tuple[str, dict], tmp_path: Path) -> None:
    address, env = ray_head
    first = submit(address, env, tmp_path / "run")
    assert first.returncode == 0 and succeeded(first.stdout), (first.stdout + first.stderr)[-4000:]
    store = MlflowClient(f"sqlite:///{tmp_path / 'run' / 'mlflow.db'}")
    champion = store.get_model_version_by_alias("skin-lesion-student", "champion")
    assert champion.status == "READY"

    again = submit(address, env, tmp_path / "run")
    assert again.returncode == 0 and succeeded(again.stdout), (again.stdout + again.stderr)[-4000:]
    ran, reused = stage_status(first.stdout), stage_status(again.stdout)
    assert set(ran.values()) == {"ran"} and set(reused.values()) == {"reused"}
    assert set(reused) == set(ran) == {"preprocess", "teacher", "partition", "student:baseline", "student:layer3",
                                       "evaluation", "attention"}
