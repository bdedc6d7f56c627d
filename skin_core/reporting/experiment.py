"""The seed experiment's comparison: per-variant figures over seeds, and AT − baseline with a paired bootstrap CI.

Input: one :class:`SeedResult` per seed (the evaluation's metrics for the kept
and the last epoch's weights, the per-image probabilities, the teacher's
quality and the kept epochs).  Output: tidy tables (every figure per seed;
mean ± std over seeds; the paired differences with their interval), a
Markdown rendering, and one figure.  The interval is
``skin_core.metrics.compare.paired_bootstrap``: test images resampled within
each seed, the same indices for both models, the mean difference over seeds.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from skin_core.classes import CLASSES
from skin_core.layers import BASELINE, LayerSet
from skin_core.metrics.compare import PairedDifference, paired_bootstrap

logger = logging.getLogger(__name__)

FIGURES = ("accuracy", "balanced_accuracy", "macro_f1", "F1 MEL", "F1 BCC", "F1 SCC")
COMPARED = ("balanced_accuracy", "accuracy", "macro_f1")  # the paired differences reported
TEST_SETS = ("test", "HAM-test", "BCN-test")
SET_ORDER = ("val", *TEST_SETS)


@dataclass(frozen=True)
class SeedResult:
    """One seed's evaluation (``metrics``: {set: {model: report dict}}) and what explains it."""

    seed: int
    metrics: dict
    metrics_last: dict
    predictions: pd.DataFrame  # image_id, label_idx, variant, weights, split, test_set, one column per class
    teacher: dict = field(default_factory=dict)  # knn_* figures of the seed's teacher
    kept_epochs: dict = field(default_factory=dict)  # variant → (kept epoch, epochs trained)


def _figures(report: dict) -> dict[str, float]:
    per_class = report["per_class"]
    return {"accuracy": report["accuracy"], "balanced_accuracy": report["balanced_accuracy"],
            "macro_f1": report["macro_f1"], **{f"F1 {c}": per_class[c]["f1"] for c in ("MEL", "BCC", "SCC")}}


def seed_table(results: Sequence[SeedResult]) -> pd.DataFrame:
    """Every figure per seed: columns seed, weights (kept | last), set, model, then ``FIGURES``."""
    rows = [{"seed": r.seed, "weights": weights, "set": set_name, "model": model, **_figures(report)}
            for r in results for weights, metrics in (("kept", r.metrics), ("last", r.metrics_last))
            for set_name, by_model in metrics.items() for model, report in by_model.items()]
    return pd.DataFrame(rows)


def mean_std(table: pd.DataFrame) -> pd.DataFrame:
    """Mean and standard deviation (ddof 1) over seeds, per weights, set and model."""
    grouped = table.groupby(["weights", "set", "model"], sort=False)[list(FIGURES)]
    out = grouped.mean().join(grouped.std(ddof=1), rsuffix=" std").join(grouped.size().rename("seeds"))
    return out.reset_index()


def _set_rows(frame: pd.DataFrame, set_name: str) -> pd.Series:
    return frame["split"].eq("test") if set_name == "test" else frame["test_set"].eq(set_name)


def _run(frame: pd.DataFrame, set_name: str, variant: str, weights: str) -> tuple | None:
    """(y_true, baseline probs, variant probs) on one seed's images of ``set_name``, or None if it has none."""
    chosen = frame[_set_rows(frame, set_name) & frame["weights"].eq(weights)]
    base = chosen[chosen["variant"] == BASELINE].set_index("image_id").sort_index()
    other = chosen[chosen["variant"] == variant].set_index("image_id").reindex(base.index)
    if base.empty or other[list(CLASSES)].isna().any().any():
        return None
    return base["label_idx"].to_numpy(np.int64), base[list(CLASSES)].to_numpy(), other[list(CLASSES)].to_numpy()


def paired_differences(results: Sequence[SeedResult], n_boot: int = 2000, confidence: float = 0.95,
                       weights: str = "kept", seed: int = 0) -> pd.DataFrame:
    """AT − baseline per variant, test set and metric: per-seed differences and the pooled bootstrap CI."""
    variants = sorted({v for r in results for v in r.predictions["variant"].unique() if v != BASELINE})
    rows = []
    for variant in variants:
        for set_name in TEST_SETS:
            runs = [run for r in results if (run := _run(r.predictions, set_name, variant, weights)) is not None]
            if len(runs) < len(results):
                continue  # a seed without this set (no BCN images, say): nothing paired to compare
            for metric in COMPARED:
                d: PairedDifference = paired_bootstrap(runs, metric, n_boot=n_boot, seed=seed, confidence=confidence)
                rows.append({"variant": LayerSet.parse(variant).display_name, "set": set_name, "metric": metric,
                             "difference": d.observed, "low": d.low, "high": d.high,
                             "per_seed": ", ".join(f"{x:+.3f}" for x in d.per_seed),
                             "seeds_agree": _common_sign(d.per_seed),
                             "excludes_zero": d.excludes_zero, "images": sum(len(run[0]) for run in runs)})
    return pd.DataFrame(rows)


def _common_sign(values: Sequence[float]) -> int:
    """+1 when every value is above 0, -1 when every one is below, else 0 (from the numbers, not their rounding)."""
    return 1 if all(x > 0 for x in values) else -1 if all(x < 0 for x in values) else 0


def verdict(diffs: pd.DataFrame, set_name: str, metric: str) -> str:
    """Whether the AT − baseline difference supports an improvement, contradicts it, or cannot tell.

    The bootstrap interval resamples test images, so it holds the test-set noise but not the seed-to-seed
    spread of training: an interval clear of 0 only counts when every seed's difference has its sign.
    """
    lines = []
    for row in diffs[(diffs["set"] == set_name) & (diffs["metric"] == metric)].itertuples():
        ci = f"{row.difference:+.3f} (95% CI {row.low:+.3f} to {row.high:+.3f}; per seed {row.per_seed})"
        if row.low > 0 and row.seeds_agree > 0:
            word = "supports an improvement"
        elif row.high < 0 and row.seeds_agree < 0:
            word = "contradicts it: attention transfer is worse"
        elif row.low > 0 or row.high < 0:
            word = "cannot tell: the interval excludes 0 but the seeds disagree in sign"
        else:
            word = "cannot tell: the interval includes 0"
        lines.append(f"{row.variant} − baseline, {metric.replace('_', ' ')} on {set_name}: {ci}; {word}")
    return "; ".join(lines) or f"no paired comparison on {set_name}"


def _fmt(mean: float, std: float) -> str:
    if mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return "–"
    return f"{mean:.3f}" if std is None or math.isnan(std) else f"{mean:.3f} ± {std:.3f}"


def markdown_table(summary: pd.DataFrame, set_name: str, weights: str = "kept") -> str:
    """Mean ± std over seeds of every figure, one row per model."""
    chosen = summary[(summary["set"] == set_name) & (summary["weights"] == weights)]
    header = "| model | " + " | ".join(f.replace("_", " ") for f in FIGURES) + " |"
    lines = [header, "|" + "---|" * (len(FIGURES) + 1)]
    for _, row in chosen.iterrows():
        cells = [_fmt(row[f], row[f"{f} std"]) for f in FIGURES]
        lines.append(f"| {row['model']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def differences_table(diffs: pd.DataFrame) -> str:
    lines = ["| comparison | set | metric | mean difference | 95% CI | per seed | CI excludes 0 |",
             "|---|---|---|---|---|---|---|"]
    for r in diffs.itertuples():
        lines.append(f"| {r.variant} − baseline | {r.set} | {r.metric.replace('_', ' ')} | {r.difference:+.3f} | "
                     f"[{r.low:+.3f}, {r.high:+.3f}] | {r.per_seed} | {'yes' if r.excludes_zero else 'no'} |")
    return "\n".join(lines)


def teacher_table(results: Sequence[SeedResult]) -> str:
    lines = ["| seed | k-NN balanced acc. (teacher) | (untrained network) | k-NN accuracy (teacher) | (untrained) |",
             "|---|---|---|---|---|"]
    for r in results:
        t = r.teacher
        lines.append(f"| {r.seed} | {t.get('knn_balanced_accuracy', float('nan')):.3f} | "
                     f"{t.get('knn_init_balanced_accuracy', float('nan')):.3f} | "
                     f"{t.get('knn_accuracy', float('nan')):.3f} | {t.get('knn_init_accuracy', float('nan')):.3f} |")
    return "\n".join(lines)


def kept_epochs_table(results: Sequence[SeedResult]) -> str:
    variants = sorted({v for r in results for v in r.kept_epochs})
    lines = ["| seed | " + " | ".join(LayerSet.parse(v).display_name for v in variants) + " |",
             "|---|" + "---|" * len(variants)]
    for r in results:
        cells = [f"epoch {r.kept_epochs[v][0] + 1} of {r.kept_epochs[v][1]}" if v in r.kept_epochs else "–"
                 for v in variants]
        lines.append(f"| {r.seed} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def sets_present(summary: pd.DataFrame) -> list[str]:
    return [s for s in SET_ORDER if s in set(summary["set"])]


def comparison_markdown(results: Sequence[SeedResult], summary: pd.DataFrame, diffs: pd.DataFrame) -> str:
    """The whole comparison as Markdown: per-set tables (kept and last epoch), differences, teacher, epochs."""
    seeds = ", ".join(str(r.seed) for r in results)
    parts = [f"Seeds: {seeds}. Mean ± standard deviation over seeds; the kept epoch is the one with the best "
             "validation figure (`student.select_metric`), the last epoch is shown beside it."]
    for set_name in sets_present(summary):
        parts += [f"### {set_name}: kept epoch", markdown_table(summary, set_name, "kept"),
                  f"### {set_name}: last epoch", markdown_table(summary, set_name, "last")]
    parts += ["### Attention transfer − baseline (paired bootstrap over test images, pooled across seeds)",
              differences_table(diffs) if not diffs.empty else "No AT variant to compare.",
              "### The teacher's features against the labels (k-NN, k = 20, cosine, held-out lesions)",
              teacher_table(results), "### Kept epochs", kept_epochs_table(results)]
    return "\n\n".join(parts) + "\n"


def comparison_figure(table: pd.DataFrame, diffs: pd.DataFrame, out_path: str | Path,
                      metric: str = "balanced_accuracy") -> Path:
    """Left: each model's ``metric`` per seed on each test set; right: AT − baseline with its 95% CI."""
    from skin_core.plots.evaluation import new_figure, save

    kept = table[(table["weights"] == "kept") & table["set"].isin(TEST_SETS)]
    fig = new_figure(11, 4.2)
    left, right = fig.subplots(1, 2)
    models = list(dict.fromkeys(kept["model"]))
    sets = [s for s in TEST_SETS if s in set(kept["set"])]
    for j, model in enumerate(models):
        for i, set_name in enumerate(sets):
            values = kept[(kept["model"] == model) & (kept["set"] == set_name)][metric]
            x = i + (j - (len(models) - 1) / 2) * 0.18
            left.scatter(np.full(len(values), x), values, s=28, label=model if i == 0 else None)
            left.hlines(values.mean(), x - 0.07, x + 0.07, colors="black", linewidth=1.5)
    left.set_xticks(range(len(sets)), sets)
    left.set_ylabel(metric.replace("_", " "))
    left.set_title("Per seed (bar: mean)")
    left.legend(fontsize=8)
    chosen = diffs[diffs["metric"] == metric].reset_index(drop=True)
    for k, r in chosen.iterrows():
        right.errorbar(r["difference"], k, xerr=[[r["difference"] - r["low"]], [r["high"] - r["difference"]]],
                       fmt="o", capsize=4, color="#0072B2")
    right.axvline(0, color="#999999", linestyle="--")
    right.set_yticks(range(len(chosen)), [f"{r.variant}, {r.set}" for r in chosen.itertuples()])
    right.set_xlabel(f"{metric.replace('_', ' ')}: AT − baseline (95% CI)")
    right.set_title("Paired difference, pooled over seeds")
    return save(fig, out_path, "experiment comparison")
