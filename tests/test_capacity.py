"""Resource checks against what a cluster can provide: its nodes when fixed, its node types when it autoscales."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from ray._private.state import GlobalState
from ray.core.generated import autoscaler_pb2

from raytasks.capacity import UNBOUNDED, Capacity, NodeType, _cluster_config, launcher_node_types
from raytasks.runtime import ResourceError, WorkerPlan, check_capacity, plan_workers
from skin_core.config import ResourcesConfig, load_config

REPO = Path(__file__).resolve().parents[1]
HEAD_ONLY = Capacity.of_nodes([{"CPU": 0.0}])  # an autoscaling cluster's head before any worker is up


def bootstrap_config() -> dict:
    """cluster.yaml as the launcher hands it to the head: each type's resources filled from its instance type."""
    config = yaml.safe_load((REPO / "cluster.yaml").read_text())
    nodes = config["available_node_types"]
    nodes["gpu_worker"]["resources"] = {"CPU": 48, "GPU": 4, "memory": 150 * 2**30}  # g5.12xlarge
    nodes["cpu_worker"]["resources"] = {"CPU": 32, "memory": 60 * 2**30}  # c6i.8xlarge
    return config


def test_node_types_come_from_the_launcher_config() -> None:
    types = {t.name: t for t in launcher_node_types(bootstrap_config())}
    assert types["head"] == NodeType("head", {"CPU": 0.0}, 1, 1)
    assert types["gpu_worker"] == NodeType("gpu_worker", {"CPU": 48.0, "GPU": 4.0, "memory": 150.0 * 2**30}, 0, 4)
    assert types["cpu_worker"].max_count == 8 and types["cpu_worker"].can_grow and not types["head"].can_grow
    # the cluster-wide max_workers caps a type's own, and stands in for a missing one
    capped = launcher_node_types({"max_workers": 3, "head_node_type": "h", "available_node_types": {
        "h": {"resources": {}}, "a": {"resources": {"CPU": 2}, "max_workers": 10}, "b": {"resources": {"CPU": 2}}}})
    assert [t.max_count for t in capped] == [1, 3, 3]
    assert launcher_node_types({"available_node_types": {"a": {"resources": {"CPU": 2}}}})[0].max_count == UNBOUNDED


def test_ray_reads_the_reported_types_as_we_do() -> None:
    """Ray Train's own fail-fast check sums the same GCS config: the totals agree."""
    types = launcher_node_types(bootstrap_config())
    config = autoscaler_pb2.ClusterConfig.FromString(_cluster_config(types))
    capacity = Capacity.of_types(types)
    for resource in ("CPU", "GPU"):
        assert GlobalState._calculate_max_resource_from_cluster_config(config, resource) == capacity.total(resource)
    assert capacity.total("CPU") == 4 * 48 + 8 * 32 and capacity.total("GPU") == 16


def test_paper_profile_fits_an_autoscaling_cluster_with_no_worker_up() -> None:
    capacity = Capacity.of_types(launcher_node_types(bootstrap_config()))
    paper = load_config(REPO / "jobs" / "configs" / "paper.yaml").resources
    plan = plan_workers(paper, capacity)
    assert plan == WorkerPlan(4, 4.0, True, 4)
    check_capacity(plan, paper, capacity)  # the head alone has 0 CPUs: this must not count
    with pytest.raises(ResourceError, match="more than any node"):
        check_capacity(plan, paper, HEAD_ONLY)


def test_auto_plan_on_an_autoscaling_cluster_comes_from_the_node_types() -> None:
    types = [NodeType("head", {"CPU": 0.0}, 1, 1), NodeType("cpu_worker", {"CPU": 2.0}, 0, 2)]
    capacity = Capacity.of_types(types)
    auto = ResourcesConfig()  # what the smoke and demo profiles ask for
    assert plan_workers(auto, capacity) == WorkerPlan(1, 1.0, False, 2)  # one node's worth, every core of it
    check_capacity(plan_workers(auto, capacity), auto, capacity)
    # GPU auto: one node's GPUs, not every GPU the cluster could grow to
    gpu_types = launcher_node_types(bootstrap_config())
    assert plan_workers(ResourcesConfig(use_gpu=True, cpus_per_worker=8), Capacity.of_types(gpu_types)).num_workers == 4
    # two workers that fit one node share its cores
    assert plan_workers(ResourcesConfig(num_workers=2), capacity).threads == 1


def test_what_no_node_type_can_hold_is_refused_at_once() -> None:
    capacity = Capacity.of_types(launcher_node_types(bootstrap_config()))
    big = ResourcesConfig(num_workers=1, use_gpu=True, cpus_per_worker=64)
    with pytest.raises(ResourceError, match="more than any node this cluster can grow to has"):
        check_capacity(plan_workers(big, capacity), big, capacity)
    many = ResourcesConfig(num_workers=17, use_gpu=True, cpus_per_worker=4)
    with pytest.raises(ResourceError, match="17 GPU workers > the 16 GPUs this cluster can grow to"):
        check_capacity(plan_workers(many, capacity), many, capacity)
    starved = ResourcesConfig(num_workers=2, cpus_per_worker=2.0, data_cpus=1.0)
    small = Capacity.of_types([NodeType("w", {"CPU": 2.0}, 0, 2)])
    with pytest.raises(ResourceError, match=r"> the 4 CPUs this cluster can grow to"):
        check_capacity(plan_workers(starved, small), starved, small)


def test_a_fixed_cluster_still_fails_fast_and_says_how_to_report_types() -> None:
    auto = ResourcesConfig()
    with pytest.raises(ResourceError, match="skin report-node-types"):
        check_capacity(plan_workers(auto, HEAD_ONLY), auto, HEAD_ONLY)
