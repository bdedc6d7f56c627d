"""The pipeline's HTML report, assembled from the stages' typed outputs (``out/report.html``)."""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING

import pandas as pd

from raytasks.attention import FOCUS_FIGURE, AttentionSummary, distance_table, focus_table, panel_list
from raytasks.evaluation import SETS, EvaluationSummary, comparison
from raytasks.partition import PartitionSummary, summary_table
from raytasks.stages import StageOutput
from raytasks.teacher import HISTORY as TEACHER_HISTORY
from raytasks.teacher import MONTAGE, TeacherSummary
from skin_core import storage
from skin_core.config import PipelineConfig
from skin_core.data.summary import DatasetSummary
from skin_core.reporting import Section, render_report

if TYPE_CHECKING:
    from raytasks.pipeline import PipelineResult

REPORT = "report.html"


def _set_order(name: str) -> tuple[int, str]:
    """val, test, HAM-test, BCN-test order (as in the tables), then by name."""
    stem = name.rsplit(".", 1)[0]
    return next((i for i, s in enumerate(SETS) if stem.endswith(f"_{s}")), len(SETS)), name


def _pngs(evaluation: StageOutput[EvaluationSummary], prefix: str) -> dict[str, bytes]:
    names = sorted((u.rsplit("/", 1)[-1] for u in evaluation.publication.uris(".png")), key=_set_order)
    return {n[len(prefix):-len(".png")].replace("_", " "): evaluation.read_bytes(n)
            for n in names if n.startswith(prefix)}


def _dataset(summary: DatasetSummary) -> Section:
    counts = pd.DataFrame({"images": pd.Series(summary.per_class)}).T
    origins = pd.DataFrame({"images": pd.Series(summary.per_origin)}).T
    return Section("Dataset", f"{summary.images:,} images", tables={"per class": counts, "per origin": origins})


def _teacher(teacher: StageOutput[TeacherSummary], factor_nmi: dict[str, float]) -> Section:
    history = teacher.read_csv(TEACHER_HISTORY, keep_default_na=True)
    s = teacher.summary
    quality = pd.DataFrame({"k-NN accuracy": [s.knn_init_accuracy, s.knn_accuracy],
                            "k-NN balanced accuracy": [s.knn_init_balanced_accuracy, s.knn_balanced_accuracy]},
                           index=["untrained network (epoch 0)", f"teacher (epoch {s.epochs})"])
    tables = {"feature quality against the labels (k = 20, cosine; labels only evaluate)": quality,
              "training history": history.select_dtypes("number").set_index("epoch")}
    if factor_nmi:
        tables["cluster NMI against the synthetic generator's factors"] = pd.DataFrame([factor_nmi], index=["NMI"])
    verdict = ("The teacher's features classify held-out lesions better than the untrained network's."
               if s.knn_balanced_accuracy > s.knn_init_balanced_accuracy else
               "Warning: the teacher's features are no better than the untrained network's on held-out lesions; "
               "it has little useful attention to transfer.")
    return Section("Metric teacher: DeepCluster + Multi-Similarity loss",
                   f"K = {s.clusters} clusters over {s.images:,} images, epochs trained: {s.epochs}; cluster purity "
                   f"{s.purity:.3f}, NMI to labels {s.nmi_label:.3f}. {verdict} Each montage row is one cluster.",
                   tables, {"cluster montage": teacher.read_bytes(MONTAGE)}, figure_width=900)


def _partition(partition: StageOutput[PartitionSummary]) -> Section:
    c = partition.summary
    summary = summary_table(partition)
    per_split = summary["total"].unstack(0).reindex(columns=["train", "val", "test"]).fillna(0).astype(int)
    per_origin = summary.drop(columns="total").groupby(level=0).sum().reindex(["train", "val", "test"])
    return Section("Cluster-based partition", f"train {c.train:,} · val {c.val:,} · test {c.test:,}; "
                   f"held-out clusters {list(c.test_clusters)}; the test split is split again by origin (HAM-test, "
                   "BCN-test)", {"images per class and split": per_split.T, "images per origin and split": per_origin})


def _results(evaluation: StageOutput[EvaluationSummary]) -> list[Section]:
    tables = {s: comparison(evaluation, s) for s in SETS if evaluation.has(f"table_{s}.csv")}
    return [
        Section("Accuracy and F1: baseline against attention transfer", "Paper-style tables; balanced accuracy is "
                "the mean per-class recall.", tables),
        Section("Precision-recall curves", "BCC, SCC, MEL and NV; AT variants solid, baseline dashed.",
                figures=_pngs(evaluation, "pr_curves_"), figure_width=580),
        Section("Confusion matrices", figures=_pngs(evaluation, "confusion_"), figure_width=380),
        Section("Learning curves", figures=_pngs(evaluation, "learning_curves_"), figure_width=560),
    ]


def _attention(attention: StageOutput[AttentionSummary]) -> list[Section]:
    """The attention panels and mean AT distances, then the lesion focus where the data has masks."""
    s = attention.summary
    panels = panel_list(attention)
    figures = {f"{r.image_id} · {r.label} · {r.origin}": attention.read_bytes(r.file) for r in panels.itertuples()}
    sections = [Section(
        "Attention: teacher and students, layer by layer",
        f"Q = the L2-normalised channel mean of |A|² (the transfer loss's own map), per layer, overlaid on the "
        f"preprocessed input with one colour scale per layer; each student panel shows its AT distance to the "
        f"teacher for that image. The table is the mean over {s.images} validation images; every layer is measured, "
        "transferred or not, so the baseline row is the distance with no transfer. Panels: two validation images "
        "per class (seeded), a BCN image first where the class has one.",
        {"mean AT distance to the teacher per layer (validation)": distance_table(attention).map(lambda v: f"{v:.2e}")},
        figures, figure_width=1000)]
    focus = focus_table(attention)
    if not focus.empty:
        sections.append(Section(
            "Lesion focus: attention inside the lesion",
            f"Share of each model's attention mass (Q) inside the generator's lesion mask, mapped through the same "
            f"border crop and resize as the image; mean over {s.masked} validation images. The last row is the "
            "lesion's area: the share a uniform map would have.",
            {"share of attention inside the lesion": focus}, {"lesion focus": attention.read_bytes(FOCUS_FIGURE)},
            figure_width=620))
    return sections


def _stages(result: "PipelineResult", mlflow_hint: str) -> Section:
    table = pd.DataFrame([(s.name, "reused" if s.reused else "ran", s.folder) for s in result.stages],
                         columns=["stage", "status", "output"]).set_index("stage")
    registered = f"Registered: {result.registered}. " if result.registered else ""
    return Section("Stages", f"{registered}MLflow: {mlflow_hint}", {"": table})


def write_report(config: PipelineConfig, result: "PipelineResult", mlflow_hint: str) -> str:
    """Render and publish ``out/report.html`` (atomic write); returns its URI."""
    sections = [_dataset(result.dataset), _teacher(result.teacher, result.factor_nmi), _partition(result.partition),
                *_results(result.evaluation), *_attention(result.attention), _stages(result, mlflow_hint)]
    when = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    page = render_report("Skin-lesion classification: metric teacher and attention-transfer student",
                         f"profile {config.profile} · {when} · {storage.absolute(config.out)}", sections)
    uri = storage.join(storage.absolute(config.out), REPORT)
    storage.write_bytes(uri, page.encode("utf-8"))
    return uri
