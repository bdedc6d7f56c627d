"""The per-epoch progress line: its figures and an ETA from the epochs' own durations."""

from __future__ import annotations

import pytest

from raytasks import progress
from raytasks.progress import progress_line


def test_the_first_line_estimates_from_the_epochs_timed_parts(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(progress.time, "monotonic", lambda: 1000.0)
    line = progress_line("student:baseline", {"epoch": 0, "loss": 1.5, "train_s": 50.0, "val_s": 10.0,
                                              "images_per_s": 107.84}, total=8, started=1000.0, first_epoch=0)
    # 7 epochs left at 60 s each; the loss and speed shown as reported
    assert line == "student:baseline   epoch 1/8  loss 1.5  107.8 img/s  ETA 7m00s"


def test_later_lines_use_the_wall_time_between_reports(monkeypatch: pytest.MonkeyPatch) -> None:
    # a resumed attempt: its first report was epoch 3, 90 s ago; now epoch 6 is in (3 epochs in 90 s → 30 s each)
    monkeypatch.setattr(progress.time, "monotonic", lambda: 1090.0)
    line = progress_line("teacher", {"epoch": 6, "train_s": 5.0, "kmeans_s": 1.0}, total=10, started=1000.0,
                         first_epoch=3)
    assert line.startswith("teacher            epoch 7/10") and line.endswith("ETA 1m30s")


def test_the_last_epoch_has_nothing_left() -> None:
    assert progress_line("teacher", {"epoch": 9, "train_s": 5.0}, total=10, started=0.0,
                         first_epoch=0).endswith("ETA 0s")
