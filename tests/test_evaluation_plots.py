"""Evaluation figures: PNGs written and decodable, drawing the reports' curves and counts, the baseline dashed."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest

from skin_core.classes import CLASSES
from skin_core.metrics.classification import ClassificationReport, classification_report
from skin_core.plots import evaluation
from skin_core.plots.evaluation import confusion_matrix_plot, learning_curves, pr_curves

K = len(CLASSES)


def report(seed: int, strength: float, n: int = 200, absent: str | None = None) -> ClassificationReport:
    """Labels from one fixed draw (so every model sees the same set); scores differ per seed."""
    labels = np.random.default_rng(0).choice([k for k in range(K) if CLASSES[k] != absent], size=n)
    logits = np.random.default_rng(seed).normal(size=(n, K)) + strength * np.eye(K)[labels]
    return classification_report(labels, np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True))


def decoded(path: Path) -> np.ndarray:
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    assert image is not None, f"{path} is not a readable image"
    return image


def history(epochs: int = 6) -> pd.DataFrame:
    e = np.arange(epochs)
    return pd.DataFrame({"epoch": e, "loss": 2.5 / (1 + e), "ce": 2.0 / (1 + e), "at": 0.5 / (1 + e),
                         "lr": 0.01, "val_accuracy": 0.4 + 0.05 * e, "val_balanced_accuracy": 0.3 + 0.04 * e,
                         "val_macro_f1": 0.25 + 0.04 * e})


def test_pr_curves_png(tmp_path: Path) -> None:
    reports = {"baseline": report(1, 1.0), "AT layer3+layer4": report(2, 2.0), "AT layer4": report(3, 1.5)}
    out = pr_curves(reports, tmp_path / "sub" / "pr.png", title="Precision-recall, test")
    assert out == tmp_path / "sub" / "pr.png"
    h, w, _ = decoded(out).shape
    assert 800 <= w <= 1200 and 800 <= h <= 1200


def test_pr_curves_baseline_is_dashed_and_models_keep_their_colours(tmp_path: Path, monkeypatch) -> None:
    drawn = []
    original = evaluation.pr_panel

    def spy(ax, reports, cls, styles):
        original(ax, reports, cls, styles)
        drawn.append((cls, {line.get_label().split(" (")[0]: line for line in ax.get_lines()}))

    monkeypatch.setattr(evaluation, "pr_panel", spy)
    reports = {"baseline": report(1, 1.0), "AT layer2": report(2, 2.0), "AT layer4": report(3, 1.5)}
    pr_curves(reports, tmp_path / "pr.png")
    assert [cls for cls, _ in drawn] == ["BCC", "SCC", "MEL", "NV"]
    for cls, lines in drawn:
        for name, r in reports.items():  # each line is that model's curve for the panel's class
            np.testing.assert_array_equal(lines[name].get_xdata(), r.curves[cls].recall)
            np.testing.assert_array_equal(lines[name].get_ydata(), r.curves[cls].precision)
    for _, lines in drawn:
        assert lines["baseline"].get_linestyle() == "--"
        assert lines["AT layer2"].get_linestyle() == lines["AT layer4"].get_linestyle() == "-"
        assert lines["AT layer2"].get_color() != lines["AT layer4"].get_color()
    assert len({lines["AT layer2"].get_color() for _, lines in drawn}) == 1


def test_pr_curves_with_an_absent_class_and_no_baseline(tmp_path: Path) -> None:
    reports = {"AT layer4": report(2, 2.0, absent="SCC")}
    out = pr_curves(reports, tmp_path / "pr.png", baseline="baseline", classes=("SCC", "MEL", "NV"))
    assert decoded(out).shape[1] >= 800


def test_pr_curves_refuses_unknown_classes_and_mixed_sets(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown"):
        pr_curves({"baseline": report(1, 1.0)}, tmp_path / "x.png", classes=("XYZ",))
    with pytest.raises(ValueError, match="different sets"):
        pr_curves({"baseline": report(1, 1.0), "AT": report(2, 1.0, n=150)}, tmp_path / "x.png")


@pytest.fixture()
def figures(monkeypatch: pytest.MonkeyPatch) -> list:
    """Every figure the plots write, recorded on its way to the PNG."""
    recorded, real_save = [], evaluation.save

    def keep(fig, path, what):  # noqa: ANN001, ANN202
        recorded.append(fig)
        return real_save(fig, path, what)

    monkeypatch.setattr(evaluation, "save", keep)
    return recorded


def test_confusion_matrix_png(tmp_path: Path, figures: list) -> None:
    shown = report(2, 2.0, absent="DF")
    out = confusion_matrix_plot(shown, tmp_path / "cm.png", title="AT layer4, test")
    image = decoded(out)
    assert 600 <= image.shape[1] <= 900 and 600 <= image.shape[0] <= 900
    # what it draws: row fractions as colours and every count in its cell
    ax = figures[0].axes[0]
    np.testing.assert_allclose(ax.images[0].get_array(), evaluation.row_fractions(shown.confusion))
    cells = {(round(t.get_position()[1]), round(t.get_position()[0])): t.get_text() for t in ax.texts}
    assert cells == {(i, j): str(n) for (i, j), n in np.ndenumerate(shown.confusion)}


def test_row_fractions_sum_to_one_for_present_classes() -> None:
    fractions = evaluation.row_fractions(np.array([[3, 1], [0, 0]]))
    np.testing.assert_allclose(fractions, [[0.75, 0.25], [0.0, 0.0]])


def test_learning_curves_png(tmp_path: Path, figures: list) -> None:
    resumed = pd.concat([history().iloc[:4], history().iloc[3:]])  # epoch 3 reported twice: the last one counts
    resumed.iloc[3, resumed.columns.get_loc("loss")] = 99.0
    out = learning_curves(resumed, tmp_path / "lc.png")
    h, w, _ = decoded(out).shape
    assert 1000 <= w <= 1400 and 400 <= h <= 600
    drawn = {line.get_label(): line for ax in figures[0].axes for line in ax.get_lines()}
    assert set(drawn) == {"loss", "ce", "at", "val_accuracy", "val_balanced_accuracy", "val_macro_f1"}
    for column, line in drawn.items():
        np.testing.assert_array_equal(line.get_xdata(), history()["epoch"])
        np.testing.assert_allclose(line.get_ydata(), history()[column])
    single = learning_curves(history(1)[["epoch", "val_accuracy"]], tmp_path / "one.png")
    assert decoded(single).shape[1] < w  # one panel only


def test_learning_curves_refuses_a_history_without_metrics(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="none of the metrics"):
        learning_curves(pd.DataFrame({"epoch": [0, 1], "lr": [0.1, 0.1]}), tmp_path / "x.png")
    with pytest.raises(ValueError, match="epoch"):
        learning_curves(pd.DataFrame({"loss": [1.0]}), tmp_path / "x.png")
