"""One writer per stage folder among the concurrent trials of a sweep; the others wait, then reuse.

Trials with the same teacher settings share the teacher's folder (it is keyed by
the teacher's inputs), and so its partition's.  Unlocked, two such trials running
at once would both train the teacher, and the second one's ``start_run`` would
remove the first one's run folder as abandoned while it was still being written.
So a sweep's driver starts :class:`StageLocks`, a named actor of its job, and the
stage runner holds a lease on a folder from its check for a publication to its
own publishing: a trial that finds the folder leased waits, then finds the
publication and reuses it.  The holder renews its lease while it writes; a lease
that is not renewed (its process died: a trial killed by ASHA or a lost node)
expires, and the next writer takes over, removing the dead run's folder.

Where no sweep started the actor (a pipeline runs its stages one at a time), no
folder is leased.  Two separate jobs writing one folder are not covered.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from contextlib import contextmanager
from typing import Iterator

import ray
from ray.actor import ActorHandle

logger = logging.getLogger(__name__)

NAME = "skin-stage-locks"
LEASE_S = 60.0  # a holder that stopped renewing for this long is taken for dead
RENEW_S = 10.0
WAIT_S = 2.0  # between a waiter's tries


class StageLocks:
    """Leases on stage folders: ``folder -> (holder, expiry)``, on this actor's monotonic clock."""

    def __init__(self) -> None:
        self._leases: dict[str, tuple[str, float]] = {}

    def acquire(self, folder: str, holder: str, lease_s: float = LEASE_S) -> bool:
        """Take or renew the lease on ``folder`` for ``lease_s``; False while another holder's lease runs."""
        now = time.monotonic()
        current = self._leases.get(folder)
        if current is not None and current[0] != holder and current[1] > now:
            return False
        self._leases[folder] = (holder, now + lease_s)
        return True

    def release(self, folder: str, holder: str) -> None:
        """End ``holder``'s lease (a lease taken over by another holder meanwhile stays theirs)."""
        if self._leases.get(folder, ("", 0.0))[0] == holder:
            del self._leases[folder]


def start_stage_locks() -> ActorHandle:
    """The job's lock actor (started here, or the one already running); keep the handle while trials run."""
    return ray.remote(StageLocks).options(name=NAME, get_if_exists=True, num_cpus=0).remote()


def running_locks() -> ActorHandle | None:
    """The job's lock actor, or None where no sweep started one (or Ray is not running)."""
    if not ray.is_initialized():
        return None
    try:
        return ray.get_actor(NAME)
    except ValueError:
        return None


@contextmanager
def stage_lease(folder: str) -> Iterator[None]:
    """Hold the lease on ``folder`` for the block (waiting for it first), renewing it meanwhile."""
    locks = running_locks()
    if locks is None:
        yield
        return
    holder, told = uuid.uuid4().hex, False
    while not ray.get(locks.acquire.remote(folder, holder)):
        if not told:
            logger.info("%s: another trial is writing it; waiting for its publication", folder)
            told = True
        time.sleep(WAIT_S)
    stop = threading.Event()
    renewer = threading.Thread(target=_renew, args=(locks, folder, holder, stop), name="stage-lease", daemon=True)
    renewer.start()
    try:
        yield
    finally:
        stop.set()
        renewer.join()
        _call(locks.release, folder, holder)


def _renew(locks: ActorHandle, folder: str, holder: str, stop: threading.Event) -> None:
    while not stop.wait(RENEW_S):
        if _call(locks.acquire, folder, holder) is False:
            logger.error("%s: lost the lease to another writer (this process stalled over %.0f s)", folder, LEASE_S)


def _call(method, folder: str, holder: str) -> bool | None:  # noqa: ANN001 - an actor method
    """A renewal or release; None when the lock actor is gone (its sweep ended): the stage's work stands."""
    try:
        return ray.get(method.remote(folder, holder))
    except ray.exceptions.RayActorError:
        logger.warning("%s: the sweep's lock actor is gone; going on without the lease", folder)
        return None
