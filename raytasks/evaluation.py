"""Evaluation: Ray Data batch inference with the trained students, then the paper's tables and figures.

Sets: validation, the held-out test clusters, and the per-origin test sets
(HAM-test, BCN-test).  For every set: a comparison table (total accuracy,
balanced accuracy, macro F1, F1 per class; baseline and each AT variant side
by side, as CSV and JSON), PR curves for BCC, SCC, MEL and NV (AT solid,
baseline dashed), and a confusion matrix per variant; each figure's numbers sit
beside it as CSV.  Every student is evaluated twice: with its kept weights (the
epoch chosen on validation: the tables and figures) and with its last epoch's
(``metrics_last.json``), so a model kept at an early epoch is visible as such.
The per-image probabilities of both go to ``predictions.parquet`` for paired
comparisons across seeds.
"""

from __future__ import annotations

import io
import json
import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import ray

from raytasks.actors import KEPT, LAST, Predictor
from raytasks.partition import PartitionSummary, splits
from raytasks.preprocess import PreprocessSummary, read_shards, read_table, run_preprocess
from raytasks.runtime import map_with_models
from raytasks.stages import Stage, StageContext, StageOutput, run_stage
from raytasks.udfs import decode_labeled
from raytasks.student import HISTORY, StudentSummary, split_dataset
from raytasks.tracking import TrackedRun
from skin_core import storage
from skin_core.classes import CLASSES
from skin_core.config import ResourcesConfig
from skin_core.layers import BASELINE, LayerSet
from skin_core.metrics.classification import ClassificationReport, classification_report, comparison_table
from skin_core.models.bundle import load_bundle
from skin_core.plots.evaluation import confusion_matrix_plot, learning_curves, pr_curves

logger = logging.getLogger(__name__)

SETS = ("val", "test", "HAM-test", "BCN-test")
METRICS, METRICS_LAST, PREDICTIONS = "metrics.json", "metrics_last.json", "predictions.parquet"


@dataclass(frozen=True)
class EvaluationSummary:
    """Accuracy per set and model (the full figures are in ``metrics.json``)."""

    accuracy: dict  # {set: {model: accuracy}}


def predict(models: dict[str, tuple[str, str]], dataset: ray.data.Dataset, resources: ResourcesConfig) -> pd.DataFrame:
    """image_id, label_idx and one N×len(CLASSES) probability column per model for every row of ``dataset``.

    ``models`` maps a column name to (student folder, ``kept`` or ``last``).
    """
    rows = map_with_models(dataset, Predictor, {"models": models}, resources)
    return rows.sort_values("image_id").reset_index(drop=True)


def set_masks(table: pd.DataFrame) -> dict[str, pd.Series]:
    return {"val": table["split"] == "val", "test": table["split"] == "test",
            "HAM-test": table["test_set"] == "HAM-test", "BCN-test": table["test_set"] == "BCN-test"}


def reports_by_set(rows: pd.DataFrame, models: dict[str, str], table: pd.DataFrame
                   ) -> dict[str, dict[str, ClassificationReport]]:
    """{set: {model name: report}} for the sets that have images; ``models`` maps names to probability columns."""
    masks = set_masks(table.set_index("image_id").reindex(rows["image_id"]).reset_index())
    out: dict[str, dict[str, ClassificationReport]] = {}
    for name, mask in masks.items():
        if mask.sum() == 0:
            continue
        chosen = rows.loc[mask.to_numpy()]
        out[name] = {model: classification_report(chosen["label_idx"].to_numpy(), np.stack(chosen[column].to_numpy()))
                     for model, column in models.items()}
    return out


def _slug(model: str) -> str:
    return model.replace(" ", "_").replace("+", "-")


def pr_points(by_model: dict[str, ClassificationReport]) -> pd.DataFrame:
    """The numbers behind a PR figure: one row per curve point (threshold NaN at the final point)."""
    frames = [pd.DataFrame({"model": model, "class": cls, "precision": c.precision, "recall": c.recall,
                            "threshold": np.r_[c.thresholds, np.nan]})
              for model, report in by_model.items() for cls, c in report.curves.items()]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(
        columns=["model", "class", "precision", "recall", "threshold"])


def _write_figures(reports: dict[str, dict[str, ClassificationReport]], histories: dict[str, pd.DataFrame],
                   folder: Path) -> None:
    for set_name, by_model in reports.items():
        pr_curves(by_model, folder / f"pr_curves_{set_name}.png", baseline=BASELINE,
                  title=f"Precision-recall, {set_name}")
        pr_points(by_model).to_csv(folder / f"pr_curves_{set_name}.csv", index=False)
        for model, report in by_model.items():
            stem = f"confusion_{_slug(model)}_{set_name}"
            confusion_matrix_plot(report, folder / f"{stem}.png", title=f"{model}, {set_name}")
            pd.DataFrame(report.confusion, index=list(report.classes), columns=list(report.classes)).to_csv(
                folder / f"{stem}.csv")
    for variant, history in histories.items():
        learning_curves(history, folder / f"learning_curves_{variant.replace('+', '-')}.png")


def _metrics_json(reports: dict[str, dict[str, ClassificationReport]]) -> str:
    return json.dumps({s: {m: r.to_dict() for m, r in by_model.items()} for s, by_model in reports.items()},
                      indent=2, default=float)


def write_report_files(reports: dict[str, dict[str, ClassificationReport]], histories: dict[str, pd.DataFrame],
                       run_uri: str) -> None:
    """Tables (CSV, JSON) and figures (PNG, with their numbers as CSV) for every set, into ``run_uri``."""
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch)
        for set_name, by_model in reports.items():
            comparison_table(by_model).to_csv(folder / f"table_{set_name}.csv")
        (folder / METRICS).write_text(_metrics_json(reports))
        _write_figures(reports, histories, folder)
        storage.upload_tree(folder, run_uri)


def _predictions_frame(rows: pd.DataFrame, columns: dict[str, tuple[str, str, str]], table: pd.DataFrame
                       ) -> pd.DataFrame:
    """Long table: image_id, label_idx, variant, weights (kept | last), one probability column per class,
    and the image's split and test set from the partition ``table``."""
    frames = []
    for column, (variant, weights, _) in columns.items():
        probs = pd.DataFrame(np.stack(rows[column].to_numpy()), columns=list(CLASSES))
        frames.append(pd.concat([rows[["image_id", "label_idx"]].reset_index(drop=True),
                                 probs.assign(variant=variant, weights=weights)], axis=1))
    return pd.concat(frames, ignore_index=True).merge(table[["image_id", "split", "test_set"]], on="image_id")


def evaluation_stage(preprocessed: StageOutput[PreprocessSummary], partition: StageOutput[PartitionSummary],
                     students: list[StageOutput[StudentSummary]], resources: ResourcesConfig
                     ) -> Stage[EvaluationSummary]:
    """Evaluate every trained variant, kept and last weights, on validation and the test sets."""

    def write(context: StageContext) -> EvaluationSummary:
        table = splits(partition)
        dataset = split_dataset(preprocessed, table.loc[table["split"] != "train", "image_id"].tolist())
        columns = {f"{s.summary.variant}/{w}": (s.summary.variant, w, s.folder) for s in students for w in (KEPT, LAST)}
        rows = predict({c: (folder, w) for c, (_, w, folder) in columns.items()}, dataset, resources)
        reports = {w: reports_by_set(rows, {LayerSet.parse(v).display_name: c for c, (v, cw, _) in columns.items()
                                            if cw == w}, table) for w in (KEPT, LAST)}
        histories = {s.summary.variant: s.read_csv(HISTORY, keep_default_na=True) for s in students}
        write_report_files(reports[KEPT], histories, context.run_uri)
        context.write_bytes(METRICS_LAST, _metrics_json(reports[LAST]).encode())
        context.write_bytes(PREDICTIONS, _predictions_frame(rows, columns, table).to_parquet(index=False))
        return EvaluationSummary({s: {m: round(r.accuracy, 4) for m, r in by_model.items()}
                                  for s, by_model in reports[KEPT].items()})

    inputs = {"students": [s.key for s in students], "partition": partition.key}
    return Stage("evaluation", inputs, EvaluationSummary, write,
                 params={"variants": ",".join(s.summary.variant for s in students)}, exclude=(PREDICTIONS,))


def metrics(evaluation: StageOutput[EvaluationSummary], last: bool = False) -> dict:
    """{set: {model: ClassificationReport.to_dict()}} of the kept (or the last epoch's) weights."""
    return json.loads(evaluation.read_bytes(METRICS_LAST if last else METRICS))


def comparison(evaluation: StageOutput[EvaluationSummary], set_name: str) -> pd.DataFrame:
    return evaluation.read_csv(f"table_{set_name}.csv", index_col=0)


def predictions(evaluation: StageOutput[EvaluationSummary]) -> pd.DataFrame:
    """Per-image probabilities of every variant, kept and last weights (see ``_predictions_frame``)."""
    return pd.read_parquet(io.BytesIO(evaluation.read_bytes(PREDICTIONS)))


def by_origin(preprocessed: StageOutput[PreprocessSummary], models: dict[str, str],
              resources: ResourcesConfig) -> dict[str, dict[str, ClassificationReport]]:
    """Reports of each model (name → student folder, kept weights) on every image of a preprocessed dataset,
    grouped: ``all``, ``HAM-only``, ``BCN-only`` and ``non-HAM`` (other clinics and cameras)."""
    dataset = read_shards(preprocessed, columns=["image_id", "image", "label_idx"])
    origins = read_table(preprocessed, columns=["image_id", "origin"]).set_index("image_id")["origin"]
    rows = predict({name: (folder, KEPT) for name, folder in models.items()},
                   dataset.map_batches(decode_labeled, batch_format="numpy"), resources)
    origin = origins.reindex(rows["image_id"]).to_numpy()
    groups = {"all": rows, **{f"{o}-only": rows[origin == o] for o in ("HAM", "BCN")}, "non-HAM": rows[origin != "HAM"]}
    return {group: {name: classification_report(g["label_idx"].to_numpy(), np.stack(g[name].to_numpy()))
                    for name in models} for group, g in groups.items() if len(g)}


def evaluate_external(model_uri: str, data: str, out: str) -> dict[str, ClassificationReport]:
    """Evaluate a trained model on any dataset in the ISIC 2019 layout, preprocessed exactly as in training."""
    _, card = load_bundle(model_uri)
    preprocessed = run_preprocess(data, storage.join(storage.absolute(out), "preprocessed"), card.preprocess)
    model = LayerSet.parse(card.variant).display_name
    reports = by_origin(preprocessed, {model: model_uri}, ResourcesConfig())

    def write(context: StageContext) -> EvaluationSummary:
        write_report_files(reports, {}, context.run_uri)
        return EvaluationSummary({name: {model: round(by[model].accuracy, 4)} for name, by in reports.items()})

    run_stage(Stage("external", {"model": model_uri, "data": data, "preprocessed": preprocessed.key},
                    EvaluationSummary, write, name="evaluate"), storage.absolute(out), TrackedRun())
    return {name: by_model[model] for name, by_model in reports.items()}


def format_tables(result: StageOutput[EvaluationSummary], sets: tuple[str, ...] = SETS) -> str:
    """The paper-style comparison tables for the terminal."""
    blocks = [f"{s}\n{comparison(result, s).round(3).to_string()}" for s in sets if result.has(f"table_{s}.csv")]
    return "\n\n".join(blocks)
