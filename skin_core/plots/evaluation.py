"""Evaluation figures: PR curves (the paper's Figs. 6–7), confusion matrices and learning curves.

Each function draws on a bare ``matplotlib.figure.Figure`` with the Agg canvas
(no display), writes one PNG and returns its path.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from skin_core.classes import CLASS_NAMES
from skin_core.metrics.classification import ClassificationReport

logger = logging.getLogger(__name__)

DPI = 100
PANEL_IN = 4.8  # inches per PR panel side: 480 px at DPI 100
BASELINE_COLOUR = "#333333"
# Colour-blind-safe (Okabe–Ito) colours for the AT models, in the order given.
MODEL_COLOURS = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#F0E442")
LEARNING_METRICS = ("loss", "ce", "at", "val_accuracy", "val_balanced_accuracy", "val_macro_f1")


def new_figure(width_in: float, height_in: float) -> Figure:
    """White figure on an Agg canvas."""
    fig = Figure(figsize=(width_in, height_in), dpi=DPI, facecolor="white", layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def save(fig: Figure, out_path: str | Path, what: str) -> Path:
    """Write ``fig`` as PNG (parent folders created); returns the path."""
    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=DPI, format="png")
    logger.info("%s written to %s", what, out)
    return out


# ---------------------------------------------------------------- PR curves


def model_styles(names: Sequence[str], baseline: str) -> dict[str, dict]:
    """Line style per model, the same in every panel: baseline dashed grey, AT models solid colours."""
    styles, colours = {}, iter(MODEL_COLOURS * (1 + len(names) // len(MODEL_COLOURS)))
    for name in names:
        styles[name] = ({"color": BASELINE_COLOUR, "linestyle": "--", "linewidth": 1.8} if name == baseline
                        else {"color": next(colours), "linestyle": "-", "linewidth": 1.8})
    return styles


def pr_panel(ax: Axes, reports: Mapping[str, ClassificationReport], cls: str, styles: dict[str, dict]) -> None:
    """One class's PR curves, one line per model, AP in the legend."""
    first = next(iter(reports.values()))
    positives = first.support[cls]
    ax.set_title(f"{cls}: {CLASS_NAMES.get(cls, cls)} ({positives} positive of {first.n})", fontsize=10)
    ax.set(xlim=(0, 1), ylim=(0, 1.03), xlabel="recall", ylabel="precision")
    ax.grid(alpha=0.3)
    if positives == 0:  # recall is undefined without positives
        ax.text(0.5, 0.5, f"no {cls} in this set", ha="center", va="center", fontsize=11, color="grey")
        return
    for name, report in reports.items():
        curve = report.curves[cls]
        ax.plot(curve.recall, curve.precision, drawstyle="steps-post",
                label=f"{name} (AP {report.average_precision[cls]:.3f})", **styles[name])
    # Precision of a random ranking: the level a useful curve must clear.
    ax.axhline(positives / first.n, color="grey", linestyle=":", linewidth=1,
               label=f"prevalence {positives / first.n:.3f}")
    ax.legend(loc="lower left", fontsize=8, framealpha=0.9)


def check_pr_inputs(reports: Mapping[str, ClassificationReport], classes: Sequence[str]) -> None:
    """Non-empty reports on one set, knowing every requested class."""
    if not reports or not classes:
        raise ValueError("pr_curves needs at least one report and one class")
    unknown = [c for c in classes if c not in next(iter(reports.values())).classes]
    if unknown:
        raise ValueError(f"unknown classes {unknown}")
    if len({(r.n, tuple(r.support.values())) for r in reports.values()}) > 1:
        raise ValueError("the reports were computed on different sets (sizes or class supports differ)")


def pr_curves(reports: Mapping[str, ClassificationReport], out_path: str | Path,
              classes: Sequence[str] = ("BCC", "SCC", "MEL", "NV"), baseline: str = "baseline",
              title: str = "Precision-recall curves") -> Path:
    """One panel per class; ``baseline`` dashed, every other (AT) model solid; AP per curve in the legend.

    Models keep one colour across panels.  A class absent from the set gets an
    empty panel saying so.  Returns the PNG path.
    """
    check_pr_inputs(reports, classes)
    cols = min(2, len(classes))
    rows = math.ceil(len(classes) / cols)
    fig = new_figure(cols * PANEL_IN, rows * PANEL_IN + 0.4)
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    styles = model_styles(list(reports), baseline)
    for ax, cls in zip(axes, classes):
        pr_panel(ax, reports, cls, styles)
    for ax in axes[len(classes):]:
        ax.set_axis_off()
    fig.suptitle(title, fontsize=13, weight="bold")
    return save(fig, out_path, "PR curves")


# ---------------------------------------------------------------- confusion matrix


def row_fractions(confusion: np.ndarray) -> np.ndarray:
    """Each row divided by its total (rows of absent classes stay 0)."""
    totals = confusion.sum(axis=1, keepdims=True)
    return np.divide(confusion, totals, out=np.zeros(confusion.shape), where=totals > 0)


def annotate_counts(ax: Axes, confusion: np.ndarray, fractions: np.ndarray) -> None:
    """The count in every cell, white on dark cells so it stays readable."""
    for (i, j), count in np.ndenumerate(confusion):
        ax.text(j, i, str(count), ha="center", va="center", fontsize=9,
                color="white" if fractions[i, j] > 0.55 else "black")


def confusion_matrix_plot(report: ClassificationReport, out_path: str | Path,
                          title: str = "Confusion matrix") -> Path:
    """Heat-map of the confusion matrix: counts in the cells, colours = fraction of the true class."""
    fractions = row_fractions(report.confusion)
    fig = new_figure(7.5, 6.8)
    ax = fig.subplots()
    image = ax.imshow(fractions, cmap="Blues", vmin=0, vmax=1)
    annotate_counts(ax, report.confusion, fractions)
    ticks = range(len(report.classes))
    ax.set_xticks(ticks, report.classes)
    ax.set_yticks(ticks, [f"{c} ({report.support[c]})" for c in report.classes])
    ax.set(xlabel="predicted class", ylabel="true class (support)")
    fig.colorbar(image, ax=ax, shrink=0.8, label="fraction of the true class")
    ax.set_title(f"{title}\nn={report.n}, accuracy {report.accuracy:.3f}, "
                 f"balanced accuracy {report.balanced_accuracy:.3f}", fontsize=11)
    return save(fig, out_path, "confusion matrix")


# ---------------------------------------------------------------- learning curves


def history_columns(history: pd.DataFrame, metrics: Sequence[str]) -> tuple[list[str], list[str]]:
    """(training columns, validation columns) of ``metrics`` present in ``history``; ValueError if none."""
    if "epoch" not in history.columns:
        raise ValueError(f"history needs an 'epoch' column, has {list(history.columns)}")
    present = [m for m in metrics if m in history.columns and history[m].notna().any()]
    if not present:
        raise ValueError(f"history has none of the metrics {list(metrics)}; columns {list(history.columns)}")
    return [m for m in present if not m.startswith("val_")], [m for m in present if m.startswith("val_")]


def line_panel(ax: Axes, frame: pd.DataFrame, columns: Sequence[str], ylabel: str) -> None:
    """One line per column against epoch (markers, so a single epoch still shows)."""
    for column in columns:
        ax.plot(frame["epoch"], frame[column], marker="o", markersize=3, linewidth=1.6, label=column)
    ax.set(xlabel="epoch", ylabel=ylabel)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=9)


def learning_curves(history: pd.DataFrame, out_path: str | Path, metrics: Sequence[str] = LEARNING_METRICS,
                    title: str = "Learning curves") -> Path:
    """Per-epoch training losses (left) and validation metrics (right); absent metrics are skipped."""
    train, val = history_columns(history, metrics)
    # A resumed run may repeat an epoch; the last report of it is the one kept.
    frame = history.sort_values("epoch", kind="stable").drop_duplicates("epoch", keep="last")
    panels = [(cols, label) for cols, label in ((train, "training loss"), (val, "validation metric")) if cols]
    fig = new_figure(6.0 * len(panels), 4.6)
    for ax, (cols, label) in zip(fig.subplots(1, len(panels), squeeze=False).ravel(), panels):
        line_panel(ax, frame, cols, label)
    fig.suptitle(title, fontsize=13, weight="bold")
    return save(fig, out_path, "learning curves")
