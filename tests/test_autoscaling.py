"""A submitted pipeline on a real autoscaling Ray cluster: a 0-CPU head and a worker type with ``min_workers: 0``.

Ray's fake multi-node provider (``ray.cluster_utils.AutoscalingCluster``) runs
each worker node as a real raylet on this machine, launched and terminated by
the real autoscaler.  Its ``start``/``shutdown`` run ``ray stop --force``, which
would stop every Ray on the machine, so this head is started like the one of
test_job_submit (loopback, free ports, its own temp dir, token auth) and only
its own processes are stopped.
"""

from __future__ import annotations

import copy
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator

import pytest
from ray.cluster_utils import AutoscalingCluster

from conftest import _free_port
from test_job_submit import RAY, head_env, head_temp_dir, stage_status, start_head, stop_head, submit, succeeded

pytestmark = pytest.mark.slow

WORKER_TYPE = "cpu_worker"
IDLE_MINUTES = 0.2  # the autoscaler removes a worker node idle this long

# Ray's fake_multi_node/example.yaml, which the 2.60 wheel does not ship (AutoscalingCluster reads it from there)
FAKE_BASE = {
    "cluster_name": "fake_multinode", "max_workers": 8, "auth": {}, "docker": {}, "upscaling_speed": 1.0,
    "provider": {"type": "fake_multinode", "use_node_id_as_ip": True, "disable_node_updaters": True,
                 "disable_launch_config_check": True},
    "available_node_types": {}, "head_node_type": "ray.head.default", "idle_timeout_minutes": 0.1,
    "initialization_commands": [], "setup_commands": [], "head_setup_commands": [], "worker_setup_commands": [],
    "head_start_ray_commands": [], "worker_start_ray_commands": [], "file_mounts": {}, "cluster_synced_files": [],
    "file_mounts_sync_continuously": False, "rsync_exclude": [], "rsync_filter": []}


class LoopbackAutoscalingCluster(AutoscalingCluster):
    """Ray's fake autoscaling cluster, with its config built here and a head that stops alone."""

    def _generate_config(self, head_resources: dict, worker_node_types: dict, autoscaler_v2: bool = False,
                         **config_kwargs) -> dict:
        config = copy.deepcopy(FAKE_BASE)
        config["available_node_types"] = {**copy.deepcopy(worker_node_types), "ray.head.default": {
            "resources": dict(head_resources), "node_config": {}, "max_workers": 0}}
        config.update(config_kwargs)
        return config

    def start(self, temp: Path, env: dict) -> str:
        """The head with the autoscaler on this config; returns the dashboard address."""
        gcs = _free_port()
        self._config["provider"]["gcs_address"] = f"127.0.0.1:{gcs}"  # the provider's default is port 6379
        (temp / "autoscaling.json").write_text(json.dumps(self._config))
        self.gcs, self.temp = f"127.0.0.1:{gcs}", temp
        return start_head(temp, env, f"--port={gcs}", f"--autoscaling-config={temp / 'autoscaling.json'}",
                          f"--num-cpus={self._head_resources['CPU']}",
                          f"--object-store-memory={self._head_resources['object_store_memory']}")

    def shutdown(self) -> None:
        stop_head(self.temp)


@pytest.fixture(scope="module")
def autoscaling_head() -> Iterator[tuple[str, dict]]:
    """(dashboard address, client environment) of the running cluster, its node types reported as the
    launcher's head command does (cluster.yaml)."""
    # RAY_FAKE_CLUSTER lets the monitor use the fake provider; turning the multi-node IP lookup off keeps every
    # fake node on 127.0.0.1 (Ray otherwise asks the network for this machine's address)
    env = head_env(RAY_FAKE_CLUSTER="1", AUTOSCALER_UPDATE_INTERVAL_S="1", RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0")
    cluster = LoopbackAutoscalingCluster(
        {"CPU": 0, "object_store_memory": 150 * 2**20},
        {WORKER_TYPE: {"resources": {"CPU": 2, "object_store_memory": 200 * 2**20}, "node_config": {},
                       "min_workers": 0, "max_workers": 2}},
        max_workers=2, idle_timeout_minutes=IDLE_MINUTES)
    with head_temp_dir() as temp:
        address = cluster.start(temp, env)
        try:
            reported = subprocess.run(
                [sys.executable, "-m", "skin_cli", "report-node-types", str(temp / "autoscaling.json"),
                 "--address", cluster.gcs], env=env, capture_output=True, text=True, timeout=120)
            assert reported.returncode == 0, reported.stderr[-2000:]
            assert f"{WORKER_TYPE}: {{'CPU': 2.0}}, 0 to 2 node(s)" in reported.stdout
            yield address, env
        finally:
            cluster.shutdown()


def worker_nodes(address: str, env: dict) -> dict[str, str]:
    """{node id: ALIVE | DEAD} of every worker node this cluster has had (the head has no CPUs)."""
    listed = subprocess.run([RAY, "list", "nodes", "--address", address, "--format", "json", "--detail",
                             "--limit", "1000"], env=env, capture_output=True, text=True, timeout=120)
    assert listed.returncode == 0, listed.stderr[-2000:]
    return {n["node_id"]: n["state"] for n in json.loads(listed.stdout) if n["resources_total"].get("CPU")}


def wait_for_no_worker(address: str, env: dict, timeout: float = 180) -> dict[str, str]:
    deadline = time.monotonic() + timeout
    while "ALIVE" in (nodes := worker_nodes(address, env)).values():
        assert time.monotonic() < deadline, f"worker nodes still up after {timeout} s: {nodes}"
        time.sleep(3)
    return nodes


@pytest.mark.timeout(1500)
def test_pipeline_scales_an_empty_cluster_up_and_a_resubmission_after_scale_down_works(
        autoscaling_head: tuple[str, dict], tmp_path: Path) -> None:
    address, env = autoscaling_head
    assert worker_nodes(address, env) == {}  # min_workers 0: nothing but the 0-CPU head

    # The code runs as installed, not shipped as a working dir: Ray's fake nodes share the head's session
    # directory, so one node's runtime-env agent removing its unpacked working dir (a node being scaled down)
    # deletes the current directory of every process on the others (measured: an attention actor on a second
    # node failed in os.getcwd). Real nodes unpack it on their own disks; test_job_submit ships it.
    first = submit(address, env, tmp_path / "run", working_dir=False)
    assert first.returncode == 0 and succeeded(first.stdout), (first.stdout + first.stderr)[-4000:]
    # planned against the node type (1 worker using the type's 2 cores), not refused against 0 CPUs
    assert "training on 1 worker(s) × 1 CPU, 2 torch thread(s) each (planned from the node types" in first.stdout
    scaled = wait_for_no_worker(address, env)  # the autoscaler removes idle workers: the "after the timeout" case
    assert scaled and set(scaled.values()) == {"DEAD"}

    # the first training stage after reused stages, on a cluster with no worker up again
    again = submit(address, env, tmp_path / "run", "--set", "student.lr=0.02", "--set", "student.variants=[baseline]",
                   working_dir=False)
    assert again.returncode == 0 and succeeded(again.stdout), (again.stdout + again.stderr)[-4000:]
    assert stage_status(again.stdout) == {"preprocess": "reused", "teacher": "reused", "partition": "reused",
                                          "student:baseline": "ran", "evaluation": "ran", "attention": "ran"}
    assert len(worker_nodes(address, env)) > len(scaled)  # new worker nodes were launched for it
