"""Evaluation: Ray Data batch inference with the kept student weights, then the paper's tables and figures.

Sets: validation, the held-out test clusters, and the per-origin test sets
(HAM-test, BCN-test).  For every set: a comparison table (total accuracy,
balanced accuracy, macro F1, F1 per class; baseline and each AT variant side
by side, as CSV and JSON), PR curves for BCC, SCC, MEL and NV (AT solid,
baseline dashed), and a confusion matrix per variant.
"""

from __future__ import annotations

import json
import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import ray
import torch

from raytasks.partition import PartitionResult
from raytasks.preprocess import read_shards, run_preprocess
from raytasks.student import BASELINE, HISTORY, StudentResult, split_dataset, decode_labeled
from skin_core import storage
from skin_core.config import ResourcesConfig, config_hash
from skin_core.metrics.classification import ClassificationReport, classification_report, comparison_table
from skin_core.models.bundle import load_bundle
from skin_core.plots.evaluation import confusion_matrix_plot, learning_curves, pr_curves
from skin_core.publish import Publication, publish, reusable, start_run
from skin_core.training.student import predict_probs

logger = logging.getLogger(__name__)

SETS = ("val", "test", "HAM-test", "BCN-test")


def display_name(variant: str) -> str:
    return BASELINE if variant == BASELINE else f"AT {variant}"


class Predictor:
    """Ray Data actor holding one student: loaded once, applied to many batches."""

    def __init__(self, model_uri: str) -> None:
        self.model, _ = load_bundle(model_uri)
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        self.model.to(self.device)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        probs = predict_probs(self.model, batch["pixels"], self.device, amp=self.device.type == "cuda")
        return {"image_id": batch["image_id"], "label_idx": batch["label_idx"], "probs": probs}


def predict(model_uri: str, dataset: ray.data.Dataset, resources: ResourcesConfig) -> pd.DataFrame:
    """image_id, label_idx and an N×len(CLASSES) ``probs`` column for every row of ``dataset``."""
    gpu = {"num_gpus": 1} if resources.use_gpu else {"num_cpus": resources.cpus_per_worker}
    rows = dataset.map_batches(Predictor, fn_constructor_kwargs={"model_uri": model_uri}, batch_format="numpy",
                               batch_size=64, concurrency=max(1, resources.num_workers), **gpu).to_pandas()
    return rows.sort_values("image_id").reset_index(drop=True)


def set_masks(splits: pd.DataFrame) -> dict[str, pd.Series]:
    return {"val": splits["split"] == "val", "test": splits["split"] == "test",
            "HAM-test": splits["test_set"] == "HAM-test", "BCN-test": splits["test_set"] == "BCN-test"}


def reports_by_set(predictions: dict[str, pd.DataFrame], splits: pd.DataFrame) -> dict[str, dict[str, ClassificationReport]]:
    """{set: {model name: report}} for the sets that have images."""
    masks = set_masks(splits.set_index("image_id").reindex(next(iter(predictions.values()))["image_id"]).reset_index())
    out: dict[str, dict[str, ClassificationReport]] = {}
    for name, mask in masks.items():
        if mask.sum() == 0:
            continue
        out[name] = {display_name(v): classification_report(p.loc[mask.to_numpy(), "label_idx"].to_numpy(),
                                                            np.stack(p.loc[mask.to_numpy(), "probs"].to_numpy()))
                     for v, p in predictions.items()}
    return out


def _write_figures(reports: dict[str, dict[str, ClassificationReport]], histories: dict[str, pd.DataFrame],
                   folder: Path) -> None:
    for set_name, by_model in reports.items():
        pr_curves(by_model, folder / f"pr_curves_{set_name}.png", baseline=BASELINE,
                  title=f"Precision-recall, {set_name}")
        for model, report in by_model.items():
            slug = model.replace(" ", "_").replace("+", "-")
            confusion_matrix_plot(report, folder / f"confusion_{slug}_{set_name}.png", title=f"{model}, {set_name}")
    for variant, history in histories.items():
        learning_curves(history, folder / f"learning_curves_{variant.replace('+', '-')}.png")


def write_report_files(reports: dict[str, dict[str, ClassificationReport]], histories: dict[str, pd.DataFrame],
                       run_uri: str) -> None:
    """Tables (CSV, JSON) and figures (PNG) for every set, into ``run_uri``."""
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch)
        for set_name, by_model in reports.items():
            comparison_table(by_model).to_csv(folder / f"table_{set_name}.csv")
        metrics = {s: {m: r.to_dict() for m, r in by_model.items()} for s, by_model in reports.items()}
        (folder / "metrics.json").write_text(json.dumps(metrics, indent=2, default=float))
        _write_figures(reports, histories, folder)
        storage.upload_tree(folder, run_uri)


@dataclass(frozen=True)
class EvaluationResult:
    publication: Publication
    reused: bool

    @property
    def folder(self) -> str:
        return self.publication.folder

    def metrics(self) -> dict:
        """{set: {model: ClassificationReport.to_dict()}} as published in metrics.json."""
        return json.loads(storage.read_bytes(storage.join(self.folder, "metrics.json")))

    def table(self, set_name: str) -> pd.DataFrame:
        return storage.read_csv(storage.join(self.folder, f"table_{set_name}.csv"), index_col=0)


def run_evaluation(preprocessed: str, partition: PartitionResult, students: list[StudentResult], out: str,
                   resources: ResourcesConfig) -> EvaluationResult:
    """Evaluate every trained variant on validation and test sets; publish tables and figures."""
    out = storage.absolute(out)
    key = config_hash({"students": [s.publication.config_hash for s in students],
                       "partition": partition.publication.config_hash})
    if (existing := reusable(out, key)) is not None:
        return EvaluationResult(existing, reused=True)
    splits = partition.table()
    dataset = split_dataset(preprocessed, splits.loc[splits["split"] != "train", "image_id"].tolist()).materialize()
    predictions = {s.variant: predict(s.folder, dataset, resources) for s in students}
    reports = reports_by_set(predictions, splits)
    histories = {s.variant: storage.read_csv(storage.join(s.folder, HISTORY), keep_default_na=True) for s in students}
    run = start_run(out)
    write_report_files(reports, histories, storage.join(out, run))
    counts = {s: {m: round(r.accuracy, 4) for m, r in by_model.items()} for s, by_model in reports.items()}
    return EvaluationResult(publish(out, run, key, {"accuracy": counts}), reused=False)


def evaluate_external(model_uri: str, data: str, out: str) -> dict[str, ClassificationReport]:
    """Evaluate a trained model on any dataset in the ISIC 2019 layout, preprocessed exactly as in training."""
    _, card = load_bundle(model_uri)
    preprocessed = storage.join(storage.absolute(out), "preprocessed")
    run_preprocess(data, preprocessed, card.preprocess)
    dataset = read_shards(preprocessed, columns=["image_id", "image", "label_idx", "origin"])
    origins = dataset.select_columns(["image_id", "origin"]).to_pandas().set_index("image_id")["origin"]
    rows = predict(model_uri, dataset.map_batches(decode_labeled, batch_format="numpy"), ResourcesConfig(num_workers=1))
    rows["origin"] = origins.reindex(rows["image_id"]).to_numpy()
    groups = {"all": rows, **{f"{o}-only": g for o, g in rows.groupby("origin") if o in ("HAM", "BCN")}}
    model = display_name(card.variant)
    reports = {name: {model: classification_report(g["label_idx"].to_numpy(), np.stack(g["probs"].to_numpy()))}
               for name, g in groups.items()}
    run = start_run(storage.absolute(out))
    write_report_files(reports, {}, storage.join(storage.absolute(out), run))
    publish(storage.absolute(out), run, config_hash({"model": model_uri, "data": data}), {"images": len(rows)})
    return {name: by_model[model] for name, by_model in reports.items()}


def format_tables(result: EvaluationResult, sets: tuple[str, ...] = SETS) -> str:
    """The paper-style comparison tables for the terminal."""
    blocks = []
    for set_name in sets:
        if f"{result.publication.run}/table_{set_name}.csv" in result.publication.files:
            blocks.append(f"{set_name}\n{result.table(set_name).round(3).to_string()}")
    return "\n\n".join(blocks)
