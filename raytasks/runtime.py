"""Connecting to Ray, and how many training (or inference) workers to ask it for.

On a single CPU node one worker that uses every core beats DDP between
one-thread workers: gloo's all-reduce and a second copy of the model are pure
overhead there.  So ``resources.num_workers = 0`` (auto) asks for one worker
per GPU, or one per CPU node, and each worker sets as many torch threads as its
node has cores once its data is in memory.  An explicit count is honoured as
given (DDP across nodes and GPUs stays as it is).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

import pandas as pd
import ray
from ray.train import ScalingConfig

from skin_core import storage
from skin_core.config import ResourcesConfig

logger = logging.getLogger(__name__)


# Ray Train settings this project changes (unless the environment sets them): the preemption watcher is one
# more actor process per fit that only logs node drains (and prints a core_worker error line about its
# constructor arguments, ray-project/ray#53727); a 0.5 s health-check poll instead of 2 s notices a started
# or finished worker group sooner (about 2 s less per fit, measured on 2 cores).
TRAIN_ENV = {"RAY_TRAIN_ENABLE_PREEMPTION_WATCHER": "0", "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.5"}


def init_ray(num_cpus: int | None = None, dashboard: bool = False) -> None:
    """Join the cluster in ``RAY_ADDRESS`` (set by ``ray job submit``) or start a local Ray.

    Safe to call twice; ``num_cpus`` and ``dashboard`` only apply to a local start.
    """
    if ray.is_initialized():
        return
    for name, value in TRAIN_ENV.items():
        os.environ.setdefault(name, value)  # Ray Train passes these on to its controller and workers
    address = os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address, logging_level=logging.WARNING)
    else:
        ray.init(num_cpus=num_cpus, include_dashboard=dashboard, logging_level=logging.WARNING)
    logger.info("Ray resources: %s", ray.cluster_resources())


class ResourceError(ValueError):
    """A resource request that would hang or cannot be met."""


@dataclass(frozen=True)
class WorkerPlan:
    """The Ray Train workers of one stage and the torch threads each one runs."""

    num_workers: int
    cpus_per_worker: float
    use_gpu: bool
    threads: int

    def scaling_config(self) -> ScalingConfig:
        per_worker = {"CPU": self.cpus_per_worker, **({"GPU": 1} if self.use_gpu else {})}
        return ScalingConfig(num_workers=self.num_workers, use_gpu=self.use_gpu, resources_per_worker=per_worker)


def node_cpus() -> list[float]:
    """CPUs of each alive node that has any (a 0-CPU head is left out)."""
    return [n["Resources"].get("CPU", 0.0) for n in ray.nodes() if n["Alive"] and n["Resources"].get("CPU", 0.0) > 0]


def plan_workers(resources: ResourcesConfig, nodes: list[float], gpus: float) -> WorkerPlan:
    """Workers for ``resources`` on nodes with ``nodes`` CPUs each and ``gpus`` GPUs in all.

    Auto (``num_workers = 0``): one worker per GPU, else one per CPU node.  On
    CPU each worker runs as many threads as its node has cores divided by the
    workers placed there (Ray Data is idle once the data is in memory).
    """
    workers = resources.num_workers
    if workers == 0:
        workers = max(1, int(gpus)) if resources.use_gpu else max(1, len(nodes))
    if resources.use_gpu:
        threads = max(1, int(resources.cpus_per_worker))
    else:
        per_node = -(-workers // max(1, len(nodes)))  # ceil: workers spread evenly over the nodes
        threads = max(1, int(max(nodes, default=1) // per_node))
    return WorkerPlan(workers, resources.cpus_per_worker, resources.use_gpu, threads)


def check_cpu_headroom(plan: WorkerPlan, resources: ResourcesConfig, cluster_cpus: float) -> None:
    """Refuse a request that leaves Ray Data fewer than ``data_cpus`` CPUs: that run would hang silently."""
    training = plan.num_workers * plan.cpus_per_worker
    if training + resources.data_cpus > cluster_cpus:
        raise ResourceError(
            f"{plan.num_workers} training workers × {plan.cpus_per_worker} CPU + "
            f"{resources.data_cpus} CPU for Ray Data > the {cluster_cpus:g} CPUs of this cluster; "
            "lower resources.cpus_per_worker or resources.num_workers (fractions are allowed)")


def worker_plan(resources: ResourcesConfig) -> WorkerPlan:
    """The plan for this cluster, after the headroom check."""
    plan = plan_workers(resources, node_cpus(), ray.cluster_resources().get("GPU", 0.0))
    check_cpu_headroom(plan, resources, ray.cluster_resources().get("CPU", 0.0))
    logger.info("training on %d worker(s) × %g CPU%s, %d torch thread(s) each", plan.num_workers,
                plan.cpus_per_worker, " + 1 GPU" if plan.use_gpu else "", plan.threads)
    return plan


def storage_path(uri: str) -> str:
    """Ray Train wants an absolute local path or a URI."""
    return storage.absolute(uri)


def map_with_models(dataset: ray.data.Dataset, actor: type, kwargs: dict, resources: ResourcesConfig,
                    batch_size: int = 128) -> pd.DataFrame:
    """``dataset`` through one ``actor`` that loads its models once (on a GPU where the plan has one), as pandas.

    The actor's constructor gets ``threads`` (torch threads to use) besides ``kwargs``.
    """
    plan = worker_plan(resources)
    placement = {"num_gpus": 1} if plan.use_gpu else {"num_cpus": plan.cpus_per_worker}
    return dataset.map_batches(actor, fn_constructor_kwargs={**kwargs, "threads": plan.threads}, batch_format="numpy",
                               batch_size=batch_size, compute=ray.data.ActorPoolStrategy(size=1),
                               **placement).to_pandas()
