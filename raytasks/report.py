"""The pipeline's HTML report, assembled from the published stage outputs (``out/report.html``)."""

from __future__ import annotations

import datetime as dt

import pandas as pd

from raytasks.evaluation import SETS, EvaluationResult
from raytasks.partition import SUMMARY_FILE, PartitionResult
from raytasks.teacher import HISTORY as TEACHER_HISTORY
from raytasks.teacher import MONTAGE, TeacherResult
from skin_core import storage
from skin_core.data.summary import DatasetSummary
from skin_core.reporting import Section, render_report

REPORT = "report.html"


def _set_order(name: str) -> tuple[int, str]:
    """val, test, HAM-test, BCN-test order (as in the tables), then by name."""
    stem = name.rsplit(".", 1)[0]
    return next((i for i, s in enumerate(SETS) if stem.endswith(f"_{s}")), len(SETS)), name


def _pngs(evaluation: EvaluationResult, prefix: str, suffix: str = ".png") -> dict[str, bytes]:
    names = sorted((u.rsplit("/", 1)[-1] for u in evaluation.publication.uris(suffix)), key=_set_order)
    return {n[len(prefix):-len(suffix)].replace("_", " "): storage.read_bytes(storage.join(evaluation.folder, n))
            for n in names if n.startswith(prefix)}


def _dataset(summary: DatasetSummary) -> Section:
    d = summary.to_dict()
    counts = pd.DataFrame({"images": pd.Series(d["per_class"])}).T
    origins = pd.DataFrame({"images": pd.Series(d["per_origin"])}).T
    return Section("Dataset", f"{d['images']:,} images", tables={"per class": counts, "per origin": origins})


def _teacher(teacher: TeacherResult, factor_nmi: dict[str, float]) -> Section:
    history = storage.read_csv(teacher.uri(TEACHER_HISTORY), keep_default_na=True)
    tables = {"training history": history.select_dtypes("number").set_index("epoch")}
    if factor_nmi:
        tables["cluster NMI against the synthetic generator's factors"] = pd.DataFrame([factor_nmi], index=["NMI"])
    counts = teacher.publication.counts
    return Section("Metric teacher: DeepCluster + Multi-Similarity loss",
                   f"K = {counts['clusters']} clusters over {counts['images']:,} images, epochs trained: "
                   f"{counts['epochs']}. Each montage row is one cluster.", tables,
                   {"cluster montage": storage.read_bytes(teacher.uri(MONTAGE))}, figure_width=900)


def _partition(partition: PartitionResult) -> Section:
    (uri,) = partition.publication.uris(SUMMARY_FILE)
    c = partition.publication.counts
    summary = storage.read_csv(uri, index_col=[0, 1])
    per_split = summary["total"].unstack(0).reindex(columns=["train", "val", "test"]).fillna(0).astype(int)
    per_origin = summary.drop(columns="total").groupby(level=0).sum().reindex(["train", "val", "test"])
    return Section("Cluster-based partition", f"train {c['train']:,} · val {c['val']:,} · test {c['test']:,}; "
                   f"held-out clusters {c['test_clusters']}; the test split is split again by origin (HAM-test, "
                   "BCN-test)", {"images per class and split": per_split.T, "images per origin and split": per_origin})


def _results(evaluation: EvaluationResult) -> list[Section]:
    tables = {s: evaluation.table(s) for s in SETS
              if f"{evaluation.publication.run}/table_{s}.csv" in evaluation.publication.files}
    return [
        Section("Accuracy and F1: baseline against attention transfer", "Paper-style tables; balanced accuracy is "
                "the mean per-class recall.", tables),
        Section("Precision-recall curves", "BCC, SCC, MEL and NV; AT variants solid, baseline dashed.",
                figures=_pngs(evaluation, "pr_curves_"), figure_width=580),
        Section("Confusion matrices", figures=_pngs(evaluation, "confusion_"), figure_width=380),
        Section("Learning curves", figures=_pngs(evaluation, "learning_curves_"), figure_width=560),
    ]


def write_report(out: str, profile: str, summary: DatasetSummary, teacher: TeacherResult, factor_nmi: dict,
                 partition: PartitionResult, evaluation: EvaluationResult, stages: str, mlflow_hint: str) -> str:
    """Render and publish ``out/report.html`` (atomic write); returns its URI."""
    sections = [_dataset(summary), _teacher(teacher, factor_nmi), _partition(partition), *_results(evaluation),
                Section("Stages", f"{mlflow_hint}", {"": pd.DataFrame(
                    [line.split(maxsplit=2) for line in stages.splitlines()[1:] if len(line.split()) == 3],
                    columns=["stage", "status", "output"]).set_index("stage")})]
    when = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    page = render_report("Skin-lesion classification: metric teacher and attention-transfer student",
                         f"profile {profile} · {when} · {storage.absolute(out)}", sections)
    uri = storage.join(storage.absolute(out), REPORT)
    storage.write_bytes(uri, page.encode("utf-8"))
    return uri
