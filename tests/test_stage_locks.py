"""Concurrent writers of one stage folder (sweep trials sharing a teacher): one writes, the others reuse."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import pandas as pd
import pytest
from ray.actor import ActorHandle

from raytasks.stage_locks import StageLocks, running_locks, stage_lease, start_stage_locks
from raytasks.stages import Stage, StageContext, run_stage
from raytasks.tracking import TrackedRun


def test_a_lease_is_one_holders_until_released_or_expired() -> None:
    locks = StageLocks()
    assert locks.acquire("out/teacher", "a", lease_s=60)
    assert not locks.acquire("out/teacher", "b", lease_s=60)
    assert locks.acquire("out/partition", "b", lease_s=60)  # leases are per folder
    assert locks.acquire("out/teacher", "a", lease_s=0.05)  # renewing, here for a shorter lease
    locks.release("out/teacher", "b")  # not b's: nothing changes
    assert not locks.acquire("out/teacher", "b", lease_s=60)
    time.sleep(0.1)  # a's lease ran out without a renewal: its process is taken for dead
    assert locks.acquire("out/teacher", "b", lease_s=60)
    locks.release("out/teacher", "a")  # a's release after the takeover leaves b's lease alone
    assert not locks.acquire("out/teacher", "a", lease_s=60)
    locks.release("out/teacher", "b")
    assert locks.acquire("out/teacher", "a", lease_s=60)


@dataclass(frozen=True)
class Rows:
    rows: int


def slow_stage(calls: list[str], fail: bool = False) -> Stage[Rows]:
    """A stage whose write takes long enough for a second caller to arrive while it runs."""

    def write(context: StageContext) -> Rows:
        calls.append(context.run_uri)
        context.write_csv("table.csv", pd.DataFrame({"a": [1, 2, 3]}))
        time.sleep(1.5)
        if fail:
            raise RuntimeError("the first writer broke")
        return Rows(3)

    return Stage("slow", {"data": "abc"}, Rows, write)


@pytest.fixture()
def locks(ray_local: None) -> Iterator[ActorHandle]:
    """The job's lock actor, as a sweep starts it; stopped afterwards so that other tests run unlocked."""
    import ray

    handle = start_stage_locks()
    assert running_locks() is not None
    yield handle
    ray.kill(handle)


@pytest.mark.slow
def test_concurrent_runs_of_one_stage_write_it_once_and_the_others_reuse_it(locks: ActorHandle, tmp_path: Path) -> None:
    calls: list[str] = []
    out = str(tmp_path / "slow")
    with ThreadPoolExecutor(3) as pool:
        outputs = list(pool.map(lambda _: run_stage(slow_stage(calls), out, TrackedRun()), range(3)))
    assert len(calls) == 1, calls  # unlocked, each writes, and a later start_run removes an earlier run's folder
    assert sorted(o.reused for o in outputs) == [False, True, True]
    assert {o.folder for o in outputs} == {calls[0]} and outputs[0].read_csv("table.csv")["a"].sum() == 6


@pytest.mark.slow
def test_a_failed_writer_releases_the_folder_to_the_next(locks: ActorHandle, tmp_path: Path) -> None:
    calls: list[str] = []
    out = str(tmp_path / "slow")
    with ThreadPoolExecutor(2) as pool:
        failing = pool.submit(run_stage, slow_stage(calls, fail=True), out, TrackedRun())
        time.sleep(0.5)  # the failing writer holds the lease first
        second = pool.submit(run_stage, slow_stage(calls), out, TrackedRun())
        with pytest.raises(RuntimeError, match="the first writer broke"):
            failing.result()
        assert not second.result().reused
    assert len(calls) == 2 and second.result().folder == calls[1]


def test_without_a_sweeps_lock_actor_nothing_is_leased(tmp_path: Path) -> None:
    """A pipeline (no actor started, or no Ray at all) runs its stages unlocked, as before."""
    assert running_locks() is None
    with stage_lease(str(tmp_path)):
        assert running_locks() is None


@pytest.mark.slow
def test_a_lock_actor_gone_mid_write_fails_no_stage(locks: ActorHandle, tmp_path: Path) -> None:
    """The sweep's driver ended (and its actor with it) while a stage still wrote: the stage publishes all the
    same, since the lease only kept other writers out."""
    import ray

    calls: list[str] = []

    def write(context: StageContext) -> Rows:
        calls.append(context.run_uri)
        ray.kill(locks)
        time.sleep(1)  # until the actor is gone
        return Rows(1)

    output = run_stage(Stage("slow", {"data": "gone"}, Rows, write), str(tmp_path / "slow"), TrackedRun())
    assert not output.reused and output.folder == calls[0] and running_locks() is None
