"""Connecting to Ray: the cluster a job was submitted to, or a local one."""

from __future__ import annotations

import logging
import os

import ray
from ray.train import ScalingConfig

from skin_core import storage
from skin_core.config import ResourcesConfig

logger = logging.getLogger(__name__)


def init_ray(num_cpus: int | None = None) -> None:
    """Join the cluster in ``RAY_ADDRESS`` (set by ``ray job submit``) or start a local Ray.

    Safe to call twice; ``num_cpus`` only applies to a local start.
    """
    if ray.is_initialized():
        return
    address = os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address, logging_level=logging.WARNING)
    else:
        ray.init(num_cpus=num_cpus, include_dashboard=False, logging_level=logging.WARNING)
    logger.info("Ray resources: %s", ray.cluster_resources())


class ResourceError(ValueError):
    """A resource request that would hang or cannot be met."""


def check_cpu_headroom(resources: ResourcesConfig, cluster_cpus: float) -> None:
    """Refuse a request that leaves Ray Data fewer than ``data_cpus`` CPUs: that run would hang silently."""
    training = resources.num_workers * resources.cpus_per_worker
    if training + resources.data_cpus > cluster_cpus:
        raise ResourceError(
            f"{resources.num_workers} training workers × {resources.cpus_per_worker} CPU + "
            f"{resources.data_cpus} CPU for Ray Data > the {cluster_cpus:g} CPUs of this cluster; "
            "lower resources.cpus_per_worker or resources.num_workers (fractions are allowed)")


def scaling_config(resources: ResourcesConfig) -> ScalingConfig:
    """Ray Train workers with fractional CPUs (and one GPU each when asked), after the headroom check."""
    check_cpu_headroom(resources, ray.cluster_resources().get("CPU", 0.0))
    per_worker = {"CPU": resources.cpus_per_worker, **({"GPU": 1} if resources.use_gpu else {})}
    return ScalingConfig(num_workers=resources.num_workers, use_gpu=resources.use_gpu,
                         resources_per_worker=per_worker)


def storage_path(uri: str) -> str:
    """Ray Train wants an absolute local path or a URI."""
    return storage.absolute(uri)
