"""Atomic publication (skin_core.publish): nothing is readable before the marker, the marker says what is."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from skin_core import storage
from skin_core.publish import (MARKER, PublishError, publish, read_publication, require_publication, reusable,
                               start_run)

# A writer that fills its run folder, says so, and waits to be killed before it can publish.
KILLED_WRITER = """
import sys, time
from skin_core import storage
from skin_core.publish import start_run
out = sys.argv[1]
run = start_run(out)
for i in range(3):
    storage.write_bytes(storage.join(out, run, f"part-{i}.bin"), b"x" * 1000)
print(run, flush=True)
time.sleep(60)
"""


def write_run(out: Path, files: dict[str, bytes]) -> str:
    run = start_run(str(out))
    for name, data in files.items():
        storage.write_bytes(str(out / run / name), data)
    return run


def test_a_writer_killed_before_the_marker_leaves_nothing_readable(tmp_path: Path) -> None:
    out = tmp_path / "stage"
    writer = subprocess.Popen([sys.executable, "-c", KILLED_WRITER, str(out)], stdout=subprocess.PIPE, text=True,
                              env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])})
    run = writer.stdout.readline().strip()
    os.kill(writer.pid, signal.SIGKILL)
    writer.wait(timeout=10)
    assert run.startswith("run-") and len(list((out / run).iterdir())) == 3  # its files are on disk...
    assert read_publication(str(out)) is None  # ...and nobody reads them
    with pytest.raises(PublishError, match="no completed output"):
        require_publication(str(out))
    assert reusable(str(out), "any-key") is None
    # the next writer removes the abandoned folder and publishes only its own files
    again = write_run(out, {"a.txt": b"a"})
    assert not (out / run).exists()
    publication = publish(str(out), again, "k1", {"n": 1})
    assert publication.files == (f"{again}/a.txt",)


def test_the_marker_names_the_key_the_run_its_files_and_counts(tmp_path: Path) -> None:
    out = tmp_path / "stage"
    run = write_run(out, {"b.csv": b"1", "sub/a.bin": b"22"})
    published = publish(str(out), run, "abc123", {"images": 2, "sizes": [1, 2]}, {"inputs": {"k": "v"}})
    marker = json.loads((out / MARKER).read_text())
    assert marker == {"config_hash": "abc123", "run": run, "files": [f"{run}/b.csv", f"{run}/sub/a.bin"],
                      "counts": {"images": 2, "sizes": [1, 2]}, "extra": {"inputs": {"k": "v"}}}
    assert published.folder == str(out / run)
    assert published.uris(".csv") == [str(out / run / "b.csv")]
    assert read_publication(str(out)) == published
    assert not [p for p in out.rglob("*.tmp")]  # atomic writes leave no temporary file behind


def test_the_same_key_is_reused_and_another_key_is_refused(tmp_path: Path) -> None:
    out = tmp_path / "stage"
    run = write_run(out, {"a.txt": b"a"})
    published = publish(str(out), run, "key-one", {"n": 1})
    assert reusable(str(out), "key-one") == published
    with pytest.raises(PublishError, match="key-one.*not key-two"):
        reusable(str(out), "key-two")


def test_a_new_run_keeps_the_published_folder(tmp_path: Path) -> None:
    out = tmp_path / "stage"
    published = publish(str(out), write_run(out, {"a.txt": b"a"}), "k", {})
    abandoned = write_run(out, {"b.txt": b"b"})  # started, never published
    fresh = start_run(str(out))
    assert (out / published.run / "a.txt").read_bytes() == b"a"
    assert not (out / abandoned).exists() and fresh not in (published.run, abandoned)


def test_an_unreadable_marker_is_an_error_not_an_empty_output(tmp_path: Path) -> None:
    (tmp_path / MARKER).write_text("{not json")
    with pytest.raises(PublishError, match="unreadable completion marker"):
        read_publication(str(tmp_path))


def test_publishing_removes_the_scratch_a_run_needed_and_keeps_every_run_folder(tmp_path: Path) -> None:
    """Checkpoints and staged weights are several copies of a model that nothing reads once the output is out."""
    out = tmp_path / "stage"
    run = start_run(str(out))
    other = write_run(out, {"x.txt": b"x"})  # a concurrent writer's run: not this publication's to remove
    for name, data in {f"{run}/a.txt": b"a", "checkpoints/checkpoint_0/model.pt": b"w", "final/kept.pt": b"k"}.items():
        storage.write_bytes(str(out / name), data)
    published = publish(str(out), run, "k", {})
    assert sorted(p.name for p in out.iterdir()) == sorted([MARKER, run, other])
    assert published.files == (f"{run}/a.txt",) and (out / run / "a.txt").read_bytes() == b"a"
