"""One way to run a pipeline stage: key, reuse or write, publish, track.

A stage declares its inputs (everything that decides its output) and a
function that writes its files.  The runner hashes the inputs once: the hash
names the stage's folder under the run's root and is the key in its completion
marker.  A finished publication with that key is reused; otherwise the runner
starts a fresh run folder, calls the function, publishes atomically
(``skin_core.publish``) and logs the stage as a nested MLflow run: params, its
summary as metrics, its files as artifacts (and, for a reused stage, its
per-epoch history).  The write function gets the stage's MLflow run to log
live metrics while it trains.  Within a sweep, the check for a publication and
the write hold a lease on the folder (``raytasks.stage_locks``), so trials that
share a stage write it once.

Every stage returns a :class:`StageOutput` whose ``summary`` is the stage's own
small frozen dataclass (``TeacherSummary``, ``PartitionSummary``, ...), stored
in the marker's counts and rebuilt from them on reuse.
"""

from __future__ import annotations

import dataclasses
import logging
import typing
from dataclasses import dataclass, field
from typing import Any, Callable, Generic, Mapping, TypeVar

from raytasks.stage_locks import stage_lease
from raytasks.tracking import TrackedRun
from skin_core import storage
from skin_core.config import config_hash, flatten
from skin_core.publish import Publication, PublishError, publish, require_publication, reusable, start_run

logger = logging.getLogger(__name__)

S = TypeVar("S")


@dataclass(frozen=True)
class StageOutput(Generic[S]):
    """A published stage: where it is, whether this run reused it, and its typed summary."""

    name: str
    publication: Publication
    reused: bool
    summary: S
    run_id: str = ""  # the stage's MLflow run (empty when tracking is off)

    @property
    def key(self) -> str:
        return self.publication.config_hash

    @property
    def out(self) -> str:
        return self.publication.out

    @property
    def folder(self) -> str:
        """The published run folder holding the stage's files."""
        return self.publication.folder

    def file(self, name: str) -> str:
        """The URI of one published file; PublishError when the stage did not publish it."""
        if f"{self.publication.run}/{name}" not in self.publication.files:
            raise PublishError(f"{self.out}: the {self.name} stage published no {name}")
        return storage.join(self.folder, name)

    def has(self, name: str) -> bool:
        return f"{self.publication.run}/{name}" in self.publication.files

    def read_csv(self, name: str, **kwargs: Any):  # noqa: ANN201 - a pandas DataFrame
        return storage.read_csv(self.file(name), **kwargs)

    def read_bytes(self, name: str) -> bytes:
        return storage.read_bytes(self.file(name))


@dataclass(frozen=True)
class StageContext:
    """What a stage's write function gets: the folder to write into and its MLflow run for live metrics."""

    out: str  # the stage folder (checkpoints live here, beside the run folders)
    run_uri: str  # the fresh run folder the stage's files go into
    key: str
    tracker: TrackedRun

    def path(self, name: str) -> str:
        return storage.join(self.run_uri, name)

    def write_bytes(self, name: str, data: bytes) -> str:
        uri = self.path(name)
        storage.write_bytes(uri, data)
        return uri

    def write_csv(self, name: str, frame, index: bool = False) -> str:  # noqa: ANN001 - a pandas DataFrame
        return self.write_bytes(name, frame.to_csv(index=index).encode())


@dataclass(frozen=True)
class Stage(Generic[S]):
    """A stage to run: its name, what decides its output, and how to write it.

    ``kind`` names the folder under the run's root (``student``); ``name`` is
    the MLflow run name (``student:layer3``).  ``history`` names a per-epoch
    CSV the stage publishes: a reused stage logs it as metrics (a fresh one
    logs each epoch live).  ``exclude`` are file suffixes not copied into
    MLflow (shards, weights that the registry holds).
    """

    kind: str
    inputs: Mapping[str, Any]
    summary: type[S]
    write: Callable[[StageContext], S]
    name: str = ""
    params: Mapping[str, object] = field(default_factory=dict)
    history: str = ""
    exclude: tuple[str, ...] = ()

    @property
    def key(self) -> str:
        return config_hash(dict(self.inputs))

    @property
    def label(self) -> str:
        return self.name or self.kind

    def folder_in(self, root: str) -> str:
        """``root/<kind>/<key prefix>``: a change to any input never collides with an earlier output."""
        return storage.join(storage.absolute(root), self.kind, self.key[:12])


def summary_from(cls: type[S], counts: Mapping[str, Any]) -> S:
    """Rebuild a summary dataclass from the counts of a completion marker (lists back to tuples)."""
    hints = typing.get_type_hints(cls)
    values = {}
    for f in dataclasses.fields(cls):
        value = counts[f.name] if f.name in counts else f.default
        if value is dataclasses.MISSING:
            raise PublishError(f"completion marker lacks {f.name!r} of {cls.__name__}: written by an older version; "
                               "delete the stage folder to rebuild it")
        values[f.name] = tuple(value) if typing.get_origin(hints[f.name]) is tuple else value
    return cls(**values)


def run_stage(stage: Stage[S], out: str, parent: TrackedRun) -> StageOutput[S]:
    """Reuse the publication at ``out`` when its key matches, else write and publish; tracked under ``parent``."""
    with parent.nested(stage.label, stage_tags(stage, out)) as run:
        return run_in(stage, out, run)


def stage_tags(stage: Stage, out: str) -> dict[str, str]:
    return {"stage": stage.kind, "output": storage.absolute(out)}


def is_done(stage: Stage, out: str) -> bool:
    """Whether ``out`` already holds this stage's output (a different key raises, as in ``run_stage``)."""
    return reusable(storage.absolute(out), stage.key) is not None


def run_in(stage: Stage[S], out: str, run: TrackedRun) -> StageOutput[S]:
    """``run_stage`` inside an MLflow run the caller opened (and closes)."""
    out, key = storage.absolute(out), stage.key
    with stage_lease(out):  # a sweep's concurrent trials: one writes, the others wait and reuse
        existing = reusable(out, key)
        if existing is None:
            output = _write(stage, out, key, run)
    if existing is not None:
        logger.info("%s: reusing %s (key %s)", stage.label, out, key)
        output = StageOutput(stage.label, existing, True, summary_from(stage.summary, existing.counts), run.run_id)
        if stage.history:
            run.log_history(output.read_csv(stage.history, keep_default_na=True))
    run.set_tags({"reused": str(output.reused).lower()})
    run.log_params(stage.params)
    run.log_metrics(flatten(dataclasses.asdict(output.summary)))
    run.log_files([u for u in output.publication.uris() if not u.endswith(stage.exclude)])
    return output


def _write(stage: Stage[S], out: str, key: str, run: TrackedRun) -> StageOutput[S]:
    name = start_run(out)
    logger.info("%s: running into %s", stage.label, storage.join(out, name))
    summary = stage.write(StageContext(out, storage.join(out, name), key, run))
    publication = publish(out, name, key, dataclasses.asdict(summary), {"inputs": dict(stage.inputs)})
    return StageOutput(stage.label, publication, False, summary, run.run_id)


def load_output(out: str, summary: type[S], name: str = "") -> StageOutput[S]:
    """A stage published earlier (for the CLI's ``--teacher``/``--partition`` arguments)."""
    publication = require_publication(storage.absolute(out))
    return StageOutput(name or summary.__name__, publication, True, summary_from(summary, publication.counts))
