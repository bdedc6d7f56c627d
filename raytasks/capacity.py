"""What a Ray cluster can give a resource request: the nodes up now or, when it autoscales, its node types.

Ray 2.60 has no public call that says whether a cluster can grow, and into
which node shapes.  It has a place for that: the autoscaler's
``ClusterConfig`` in the GCS, which Ray Train already reads (its fail-fast
check before waiting for workers) and so does Ray Data (whether it may ask for
more nodes).  Nothing in 2.60 fills it for a cluster-launcher cluster, so the
launcher does: ``cluster.yaml`` runs, on the head, right after
``ray start --head``::

    skin report-node-types ~/ray_bootstrap_config.yaml

(the bootstrap config is the launcher's copy of ``cluster.yaml`` with every
node type's resources filled in from its instance type), and drivers read it
back (:func:`current`).  A cluster with no such report is taken as fixed: the
nodes alive now are all it has.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

import ray
import yaml

logger = logging.getLogger(__name__)

UNBOUNDED = -1  # a node type with no launch limit (the GCS config's convention)
SKIPPED = ("object_store_memory",)  # sized by Ray on each node, not a schedulable resource of the type


@dataclass(frozen=True)
class NodeType:
    """One kind of node an autoscaler may launch, and how many of it."""

    name: str
    resources: Mapping[str, float]
    min_count: int
    max_count: int  # UNBOUNDED for no limit

    @property
    def can_grow(self) -> bool:
        return self.max_count == UNBOUNDED or self.max_count > self.min_count


def launcher_node_types(config: Mapping) -> list[NodeType]:
    """The node types of a cluster-launcher config (``cluster.yaml`` or the head's bootstrap copy).

    The head type counts once; a worker type's ``max_workers`` defaults to, and
    is capped by, the cluster-wide ``max_workers``.
    """
    cap = config.get("max_workers")
    types = []
    for name, spec in config["available_node_types"].items():
        resources = {k: float(v) for k, v in (spec.get("resources") or {}).items() if k not in SKIPPED}
        if name == config.get("head_node_type"):
            low = high = 1
        else:
            low = int(spec.get("min_workers", 0))
            high = int(spec.get("max_workers", UNBOUNDED if cap is None else cap))
            high = high if cap is None or high == UNBOUNDED else min(high, int(cap))
        if not resources:
            logger.warning("node type %s lists no resources: it counts as none", name)
        types.append(NodeType(name, resources, low, high))
    return types


def _cluster_config(types: Sequence[NodeType]) -> bytes:
    from ray.core.generated import autoscaler_pb2

    config = autoscaler_pb2.ClusterConfig()
    for t in types:
        group = config.node_group_configs.add(name=t.name, min_count=t.min_count, max_count=t.max_count)
        for key, value in t.resources.items():
            group.resources[key] = int(value)  # whole units: the GCS map holds integers
    return config.SerializeToString()


def report(gcs_address: str, types: Sequence[NodeType]) -> None:
    """Store ``types`` as the cluster's autoscaling config in its GCS (where Ray Train and Ray Data look too)."""
    from ray._raylet import GcsClient

    GcsClient(address=gcs_address).report_cluster_config(_cluster_config(types))


def reported() -> list[NodeType]:
    """The node types reported to the connected cluster's GCS; empty when none were."""
    from ray._private.state import state

    config = state.get_cluster_config()
    if config is None:
        return []
    return [NodeType(g.name, {k: float(v) for k, v in g.resources.items()}, g.min_count, g.max_count)
            for g in config.node_group_configs]


@dataclass(frozen=True)
class Capacity:
    """Node shapes and how many of each a request can count on.

    A fixed cluster: one shape per alive node, count 1.  An autoscaling one:
    one shape per node type, at its launch limit (``inf`` when unbounded).
    """

    shapes: tuple[tuple[Mapping[str, float], float], ...]
    autoscaling: bool

    @staticmethod
    def of_nodes(nodes: Sequence[Mapping[str, float]]) -> "Capacity":
        return Capacity(tuple((dict(n), 1.0) for n in nodes), autoscaling=False)

    @staticmethod
    def of_types(types: Sequence[NodeType]) -> "Capacity":
        return Capacity(tuple((dict(t.resources), math.inf if t.max_count == UNBOUNDED else float(t.max_count))
                              for t in types if t.max_count != 0), autoscaling=True)

    def total(self, resource: str) -> float:
        return sum(shape.get(resource, 0.0) * count for shape, count in self.shapes if shape.get(resource, 0.0))

    def largest(self, resource: str) -> float:
        """The most of ``resource`` on one node."""
        return max((shape.get(resource, 0.0) for shape, _ in self.shapes), default=0.0)

    def hosts(self, bundle: Mapping[str, float]) -> list[Mapping[str, float]]:
        """The shapes that can hold ``bundle`` on one node."""
        return [shape for shape, _ in self.shapes if all(shape.get(k, 0.0) >= v for k, v in bundle.items())]

    def cpu_nodes(self) -> list[float]:
        """CPUs of each shape that has any (a 0-CPU head is left out)."""
        return [shape["CPU"] for shape, _ in self.shapes if shape.get("CPU", 0.0) > 0]

    @property
    def where(self) -> str:
        return "this cluster can grow to" if self.autoscaling else "of this cluster"


def current() -> Capacity:
    """The connected cluster's: its reported node types when any of them can grow, else its alive nodes."""
    types = reported()
    if any(t.can_grow for t in types):
        logger.info("autoscaling cluster; node types %s", ", ".join(
            f"{t.name} {dict(t.resources)} × {t.min_count}..{'∞' if t.max_count == UNBOUNDED else t.max_count}"
            for t in types))
        return Capacity.of_types(types)
    return Capacity.of_nodes([n["Resources"] for n in ray.nodes() if n["Alive"]])


def report_launcher_config(path: Path, address: str = "auto") -> list[NodeType]:
    """Report the node types of the launcher config at ``path`` to the GCS at ``address`` ("auto": the local head)."""
    from ray._private.services import canonicalize_bootstrap_address_or_die

    types = launcher_node_types(yaml.safe_load(path.expanduser().read_text()))  # JSON is YAML too
    report(canonicalize_bootstrap_address_or_die(address), types)
    return types
