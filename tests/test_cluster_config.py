"""cluster.yaml passes Ray's own cluster-config validation and keeps the project's rules."""

from __future__ import annotations

import copy
import sys
from pathlib import Path

import pytest
import ray
import yaml
from ray.autoscaler._private.util import prepare_config, validate_config

CLUSTER = Path(__file__).resolve().parents[1] / "cluster.yaml"


@pytest.fixture(scope="module")
def cluster() -> dict:
    return yaml.safe_load(CLUSTER.read_text())


def test_ray_validates_the_cluster_config(cluster: dict) -> None:
    validate_config(prepare_config(copy.deepcopy(cluster)))


def test_ray_validation_catches_a_broken_field(cluster: dict) -> None:
    broken = copy.deepcopy(cluster)
    broken["available_node_types"]["gpu_worker"]["max_workers"] = "four"
    with pytest.raises(Exception, match="max_workers"):
        validate_config(prepare_config(broken))


def test_images_match_the_pinned_ray_and_python(cluster: dict) -> None:
    tag = f"rayproject/ray:{ray.__version__}-py{sys.version_info.major}{sys.version_info.minor}"
    assert cluster["docker"]["head_image"].startswith(tag) and cluster["docker"]["worker_image"] == f"{tag}-gpu"


def test_node_types_s3_access_and_auth(cluster: dict) -> None:
    nodes = cluster["available_node_types"]
    assert nodes[cluster["head_node_type"]]["resources"] == {"CPU": 0}
    assert nodes["gpu_worker"]["node_config"]["InstanceType"].startswith(("g", "p"))
    assert all(n["max_workers"] > n["min_workers"] for k, n in nodes.items() if k != cluster["head_node_type"])
    assert all("IamInstanceProfile" in n["node_config"] for n in nodes.values())  # S3 via the instance role
    text = CLUSTER.read_text().lower()
    assert "aws_access_key_id" not in text and "aws_secret_access_key" not in text
    starts = cluster["head_start_ray_commands"] + cluster["worker_start_ray_commands"]
    assert all("RAY_AUTH_MODE=token" in c for c in starts if "ray start" in c)
    assert "/home/ray/.ray/auth_token" in cluster["file_mounts"]


def test_gpu_nodes_install_faiss_for_the_gpu_and_the_others_faiss_cpu(cluster: dict) -> None:
    gpu = cluster["available_node_types"]["gpu_worker"]["worker_setup_commands"]  # replaces setup_commands there
    assert any('"/home/ray/skin[gpu]"' in c and "uninstall --quiet --yes faiss-cpu" in c for c in gpu)
    assert cluster["setup_commands"] == ['pip install --quiet -e "/home/ray/skin[cpu]"']
    assert "worker_setup_commands" not in cluster["available_node_types"]["cpu_worker"]


def test_the_head_reports_its_node_types_after_it_starts(cluster: dict) -> None:
    commands = cluster["head_start_ray_commands"]
    start = next(i for i, c in enumerate(commands) if "ray start --head" in c)
    report = next(i for i, c in enumerate(commands) if "skin report-node-types ~/ray_bootstrap_config.yaml" in c)
    assert report > start and "RAY_AUTH_MODE=token" in commands[report]
