"""Connecting to Ray: the cluster a job was submitted to, or a local one."""

from __future__ import annotations

import logging
import os

import ray

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
