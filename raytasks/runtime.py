"""Connecting to Ray, and how many training (or inference) workers to ask it for.

On a single CPU node one worker that uses every core beats DDP between
one-thread workers: gloo's all-reduce and a second copy of the model are pure
overhead there.  So ``resources.num_workers = 0`` (auto) asks for one worker
per GPU, or one per CPU node, and each worker sets as many torch threads as its
node has cores once its data is in memory.  An explicit count is honoured as
given (DDP across nodes and GPUs stays as it is).  What the cluster has comes
from ``raytasks.capacity``: the nodes up now, or the node types of an
autoscaling cluster (which may have no worker up when a stage starts).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

import pandas as pd
import ray
from ray.train import DataConfig, ScalingConfig

from raytasks.capacity import Capacity, current
from skin_core import storage
from skin_core.config import ResourcesConfig

logger = logging.getLogger(__name__)


# Ray Train settings this project changes (unless the environment sets them): the preemption watcher is one
# more actor process per fit that only logs node drains (and prints a core_worker error line about its
# constructor arguments, ray-project/ray#53727).  The controller moves from one state to the next (starting,
# running, finished, shut down) at its health-check polls, so their interval is paid several times per fit:
# a no-op TorchTrainer fit of one worker on 2 cores took 12.0 s at Ray's 2 s, 8.7 s at 0.5 s, 7.6 s at 0.2 s
# and 7.7 s at 0.1 s (the benchmarks print this floor as "no-op TorchTrainer fit").
TRAIN_ENV = {"RAY_TRAIN_ENABLE_PREEMPTION_WATCHER": "0", "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.2"}


def use_train_env() -> None:
    """Set ``TRAIN_ENV`` in this process where the environment does not; Ray Train passes it on to the
    controller and workers of every fit this driver starts."""
    for name, value in TRAIN_ENV.items():
        os.environ.setdefault(name, value)

# Ray Train's placement-group cleaner asks the State API (served by the dashboard) every second whether the
# fit's controller is alive; a local Ray without the dashboard answers none of them, and every miss logs a
# warning line: about one line every 2 s through every training stage.
PG_CLEANER_LOGGER = "ray.train.v2._internal.execution.controller.placement_group_cleaner"


def quiet_pg_cleaner() -> None:
    """Worker setup hook for a dashboard-less local Ray: the cleaner logs only its errors, not each miss."""
    logging.getLogger(PG_CLEANER_LOGGER).setLevel(logging.ERROR)


def init_ray(num_cpus: int | None = None, dashboard: bool = False) -> None:
    """Join the cluster in ``RAY_ADDRESS`` (set by ``ray job submit``) or start a local Ray.

    Safe to call twice; ``num_cpus`` and ``dashboard`` only apply to a local start.
    """
    if ray.is_initialized():
        return
    use_train_env()
    address = os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address, logging_level=logging.WARNING)
    else:
        hook = {} if dashboard else {"runtime_env": {"worker_process_setup_hook": f"{__name__}.quiet_pg_cleaner"}}
        context = ray.init(num_cpus=num_cpus, include_dashboard=dashboard, logging_level=logging.WARNING, **hook)
        if dashboard:
            logger.info("Ray dashboard at http://%s (while this run lasts)", context.dashboard_url)
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

    @property
    def bundle(self) -> dict[str, float]:
        """What one worker reserves on its node."""
        return {"CPU": self.cpus_per_worker, **({"GPU": 1.0} if self.use_gpu else {})}

    def scaling_config(self) -> ScalingConfig:
        return ScalingConfig(num_workers=self.num_workers, use_gpu=self.use_gpu, resources_per_worker=self.bundle)

    def data_config(self) -> DataConfig:
        """Several workers split every dataset evenly (Ray's default); one worker reads them whole in its own
        process, so no split coordinator actor (one more process, with Ray Data to import) starts with the fit."""
        return DataConfig(datasets_to_split="all" if self.num_workers > 1 else [])


def plan_workers(resources: ResourcesConfig, capacity: Capacity) -> WorkerPlan:
    """Workers for ``resources`` on a cluster with ``capacity``.

    Auto (``num_workers = 0``) on a fixed cluster: one worker per GPU, else one
    per CPU node up.  On an autoscaling cluster, which may have no worker up
    yet, it plans from the node types: one node's worth, that is the GPUs of
    the largest GPU type, else one CPU worker.  On CPU each worker runs as many
    threads as its node has cores divided by the workers placed there (Ray Data
    is idle once the data is in memory).
    """
    nodes = capacity.cpu_nodes()
    workers = resources.num_workers or _auto_workers(resources.use_gpu, capacity)
    if resources.use_gpu:
        threads = max(1, int(resources.cpus_per_worker))
    elif capacity.autoscaling:
        threads = _threads_on_types(workers, resources.cpus_per_worker, capacity)
    else:
        per_node = -(-workers // max(1, len(nodes)))  # ceil: workers spread evenly over the nodes
        threads = max(1, int(max(nodes, default=1) // per_node))
    return WorkerPlan(workers, resources.cpus_per_worker, resources.use_gpu, threads)


def _auto_workers(use_gpu: bool, capacity: Capacity) -> int:
    if capacity.autoscaling:  # one node's worth: the autoscaler adds it
        return max(1, int(capacity.largest("GPU"))) if use_gpu else 1
    return max(1, int(capacity.total("GPU")) if use_gpu else len(capacity.cpu_nodes()))


def _threads_on_types(workers: int, cpus_per_worker: float, capacity: Capacity) -> int:
    """Threads per CPU worker wherever the autoscaler puts it: the smallest type that can host one, packed full."""
    hosts = [shape["CPU"] for shape in capacity.hosts({"CPU": cpus_per_worker})]
    return max(1, min((int(cpus // min(workers, max(1, int(cpus // cpus_per_worker)))) for cpus in hosts), default=1))


def check_capacity(plan: WorkerPlan, resources: ResourcesConfig, capacity: Capacity) -> None:
    """Refuse a request the cluster cannot meet (it would wait forever), or one that leaves Ray Data fewer than
    ``data_cpus`` CPUs (it would hang silently).  An autoscaling cluster is measured at what its node types can
    add up to, not at what is up now."""
    if not capacity.hosts(plan.bundle):
        shapes = "; ".join(str(dict(shape)) for shape, _ in capacity.shapes) or "none"
        hint = "" if capacity.autoscaling else (
            " (an autoscaling cluster must report its node types first: skin report-node-types, see the README)")
        raise ResourceError(f"one training worker needs {plan.bundle}, more than any node {capacity.where} has "
                            f"({shapes}){hint}; lower resources.cpus_per_worker or resources.use_gpu")
    training = plan.num_workers * plan.cpus_per_worker
    if training + resources.data_cpus > capacity.total("CPU"):
        raise ResourceError(
            f"{plan.num_workers} training workers × {plan.cpus_per_worker} CPU + "
            f"{resources.data_cpus} CPU for Ray Data > the {capacity.total('CPU'):g} CPUs {capacity.where}; "
            "lower resources.cpus_per_worker or resources.num_workers (fractions are allowed)")
    if plan.use_gpu and plan.num_workers > capacity.total("GPU"):
        raise ResourceError(f"{plan.num_workers} GPU workers > the {capacity.total('GPU'):g} GPUs {capacity.where}; "
                            "lower resources.num_workers (0 = one per GPU)")


def worker_plan(resources: ResourcesConfig) -> WorkerPlan:
    """The plan for the connected cluster, after the capacity check."""
    capacity = current()
    plan = plan_workers(resources, capacity)
    check_capacity(plan, resources, capacity)
    logger.info("training on %d worker(s) × %g CPU%s, %d torch thread(s) each%s", plan.num_workers,
                plan.cpus_per_worker, " + 1 GPU" if plan.use_gpu else "", plan.threads,
                " (planned from the node types: the autoscaler adds the nodes)" if capacity.autoscaling else "")
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
