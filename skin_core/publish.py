"""Atomic publication of a stage's output, the same way on a local disk and on S3.

A run writes everything under ``OUT/run-<id>/`` and then writes one marker,
``OUT/_COMPLETE.json``, naming the config hash, the counts and the files.  The
marker is written last, atomically (rename locally, a single PUT on S3), and
readers only ever open the files it lists: a run killed midway leaves a
``run-*`` folder nobody reads, which the next run removes.  Once published,
the folder keeps only the marker and its run folder: what the run needed to get
there (Ray Train checkpoints for a resume, staged weights) is removed, because
a model's checkpoints are several copies of its weights and nothing reads them
again (a smoke run left 1.3 GB before, most of it checkpoints).
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from dataclasses import asdict, dataclass, field
from typing import Any

from skin_core import storage

logger = logging.getLogger(__name__)

MARKER = "_COMPLETE.json"
RUN_PREFIX = "run-"


class PublishError(RuntimeError):
    """An output folder that is missing, incomplete or holds another config's results."""


@dataclass(frozen=True)
class Publication:
    """What a completion marker says: the run folder, its files, counts and config."""

    out: str
    config_hash: str
    run: str
    files: tuple[str, ...]  # relative to ``out``
    counts: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def folder(self) -> str:
        """The published run folder (``out/run-<id>``)."""
        return storage.join(self.out, self.run)

    def uris(self, suffix: str = "") -> list[str]:
        return [storage.join(self.out, f) for f in self.files if f.endswith(suffix)]


def read_publication(out: str) -> Publication | None:
    """The published output at ``out``, or None where nothing was completed."""
    marker = storage.join(out, MARKER)
    try:
        data = json.loads(storage.read_bytes(marker))
    except FileNotFoundError:
        return None
    except json.JSONDecodeError as err:
        raise PublishError(f"{marker}: unreadable completion marker: {err}") from err
    return Publication(out=out, config_hash=data["config_hash"], run=data["run"], files=tuple(data["files"]),
                       counts=data.get("counts", {}), extra=data.get("extra", {}))


def require_publication(out: str) -> Publication:
    publication = read_publication(out)
    if publication is None:
        raise PublishError(f"{out}: no completed output (no {MARKER}); the run that writes it "
                           "has not finished, or was interrupted: run it again")
    return publication


def reusable(out: str, config_hash: str) -> Publication | None:
    """The existing output when it was made with ``config_hash``; refuse to mix in another config."""
    publication = read_publication(out)
    if publication is None or publication.config_hash == config_hash:
        return publication
    raise PublishError(f"{out} already holds output made with config {publication.config_hash}, "
                       f"not {config_hash}: choose another output folder, or delete this one to replace it")


def start_run(out: str) -> str:
    """Remove abandoned run folders and return a fresh run folder name."""
    current = read_publication(out)
    for name in storage.list_folders(out):
        if name.startswith(RUN_PREFIX) and (current is None or name != current.run):
            logger.info("removing %s, left by an interrupted run", storage.join(out, name))
            storage.delete_prefix(storage.join(out, name))
    return f"{RUN_PREFIX}{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}"


def publish(out: str, run: str, config_hash: str, counts: dict[str, Any],
            extra: dict[str, Any] | None = None) -> Publication:
    """Write the completion marker for everything under ``out/run``: the moment the output appears."""
    files = tuple(f"{run}/{name}" for name in storage.list_tree(storage.join(out, run)))
    publication = Publication(out=out, config_hash=config_hash, run=run, files=files, counts=counts,
                              extra=extra or {})
    body = {k: v for k, v in asdict(publication).items() if k != "out"}
    storage.write_bytes(storage.join(out, MARKER), json.dumps(body, indent=2).encode())
    logger.info("published %d file(s) at %s", len(files), out)
    remove_scratch(publication)
    return publication


def remove_scratch(publication: Publication) -> None:
    """Remove the sub-folders of the published folder that are not run folders (checkpoints, staging).

    Run folders stay: another writer's run is only removed by the next ``start_run``, as before.
    """
    for name in storage.list_folders(publication.out):
        if not name.startswith(RUN_PREFIX):
            logger.info("removing %s: the output is published", storage.join(publication.out, name))
            storage.delete_prefix(storage.join(publication.out, name))
