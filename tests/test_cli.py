"""The ``skin`` command end to end: synth → info round trip, preprocess, the pipeline entrypoint."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from sklearn.metrics import normalized_mutual_info_score, precision_recall_curve

from raytasks.attention import DISTANCE, FOCUS, SCORES, distance_table, focus_table, panel_list
from raytasks.evaluation import comparison, predictions
from raytasks.partition import PartitionSummary, splits
from raytasks.pipeline import PipelineResult, run_pipeline
from raytasks.stages import load_output
from raytasks.student import HISTORY
from raytasks.teacher import ASSIGNMENTS
from conftest import MLFLOW_BUCKET, run_folder, tiny_config
from mlflow import MlflowClient
from skin_cli.main import main
from skin_core import storage
from skin_core.classes import CLASSES
from skin_core.attention.scores import UNIFORM
from skin_core.clustering.factors import FACTORS
from skin_core.data.isic import load_isic
from skin_core.inference import predict_uris
from skin_core.layers import LAYERS
from skin_core.models.bundle import load_bundle
from skin_core.publish import require_publication


def skin(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "skin_cli", *args], capture_output=True, text=True, timeout=300)


def counts_line(stdout: str, prefix: str) -> dict[str, int]:
    line = next(l for l in stdout.splitlines() if l.startswith(prefix))
    words = line[len(prefix):].split()
    return {words[i]: int(words[i + 1]) for i in range(0, len(words), 2)}


def test_synth_round_trips_through_info(tmp_path: Path) -> None:
    made = skin("synth", "--out", str(tmp_path / "syn"), "--n", "60", "--size", "64", "--seed", "3")
    assert made.returncode == 0, made.stderr
    info = skin("info", "--data", str(tmp_path / "syn"), "--json")
    assert info.returncode == 0, info.stderr
    summary = json.loads(info.stdout)
    assert summary["images"] == 60 and summary["rejects"] == {}
    assert summary["per_class"] == counts_line(made.stdout, "per class:")
    assert summary["per_origin"] == counts_line(made.stdout, "per origin:")
    factors = pd.read_csv(tmp_path / "syn" / "synth_factors.csv")
    assert factors["label"].value_counts().to_dict() == {k: v for k, v in summary["per_class"].items() if v}


def test_bad_synth_arguments_are_one_clear_line(tmp_path: Path) -> None:
    result = skin("synth", "--out", str(tmp_path / "x"), "--n", "5")
    assert result.returncode == 2 and "Traceback" not in result.stderr and "skin synth: error" in result.stderr


def test_a_missing_file_is_one_line_but_an_oserror_naming_no_file_keeps_its_traceback(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    """A missing input is the user's to fix (one line naming it); a FileNotFoundError without a file name (a
    deleted working directory under ``os.getcwd``) is a fault, and a one-line "[Errno 2]" would hide where."""
    import skin_cli.main as cli

    def missing(args) -> int:
        raise FileNotFoundError(2, "No such file or directory", "/data/ham/ISIC_0000000.jpg")

    monkeypatch.setattr(cli, "cmd_info", missing)
    assert main(["info", "--data", "x"]) == 2
    assert "skin info: error: [Errno 2] No such file or directory: '/data/ham/ISIC_0000000.jpg'" in \
        capsys.readouterr().err

    def no_cwd(args) -> int:
        raise FileNotFoundError(2, "No such file or directory")

    monkeypatch.setattr(cli, "cmd_info", no_cwd)
    with pytest.raises(FileNotFoundError):
        main(["info", "--data", "x"])


def test_pipeline_runs_every_stage_on_the_synthetic_default(tiny_run: PipelineResult) -> None:
    assert tiny_run.dataset.images == 120 and tiny_run.preprocessed.summary.written == 120
    assert tiny_run.teacher.summary.images == 120
    table = splits(tiny_run.partition)
    assert len(table) == 120 and set(table["split"]) == {"train", "val", "test"}
    # the clusters' NMI with each generator factor, recomputed here from the published assignments
    factors = pd.read_csv(Path(tiny_run.data_path) / "synth_factors.csv").rename(columns={"image": "image_id"})
    joined = tiny_run.teacher.read_csv(ASSIGNMENTS)[["image_id", "cluster"]].merge(factors, on="image_id")
    assert len(joined) == 120
    assert tiny_run.factor_nmi == {name: pytest.approx(normalized_mutual_info_score(
        joined["cluster"], joined[name].astype(str)), abs=5e-5) for name in FACTORS}
    for section in ("borders removed", "per class", "cluster NMI", "held-out clusters", "balanced_accuracy"):
        assert section in tiny_run.report


def test_students_train_the_baseline_and_an_attention_transfer_variant(tiny_run: PipelineResult) -> None:
    histories = {s.summary.variant: s.read_csv(HISTORY) for s in tiny_run.students}
    assert set(histories) == {"baseline", "layer3"}
    assert (histories["baseline"]["at"] == 0).all()
    assert (histories["baseline"]["loss"] == histories["baseline"]["ce"]).all()
    # the transfer term is live: positive, and it is what separates loss from CE
    assert (histories["layer3"]["at_layer3"] > 0).all()
    at = histories["layer3"]
    assert ((at["loss"] - at["ce"] - at["at"]).abs() < 1e-4).all()
    for s in tiny_run.students:
        model, card = load_bundle(s.folder)
        assert card.variant == s.summary.variant and card.preprocess.size == 32


def test_evaluation_writes_the_paper_tables_and_figures(tiny_run: PipelineResult) -> None:
    evaluation = tiny_run.evaluation
    table = comparison(evaluation, "val")
    assert list(table.index) == ["baseline", "AT layer3"]
    assert {"accuracy", "balanced_accuracy", "macro_f1", "F1 MEL", "F1 BCC", "F1 SCC"} <= set(table.columns)
    files = {uri.rsplit("/", 1)[-1] for uri in evaluation.publication.uris()}
    assert {"table_val.csv", "table_test.csv", "metrics.json", "pr_curves_val.png", "pr_curves_test.png",
            "confusion_baseline_val.png", "confusion_AT_layer3_val.png", "learning_curves_layer3.png"} <= files
    for name in files:
        if name.endswith(".png"):
            assert storage.read_bytes(storage.join(evaluation.folder, name))[:8] == b"\x89PNG\r\n\x1a\n"
            stem = name[:-4]
            assert stem.startswith("learning_curves_") or f"{stem}.csv" in files  # every figure's numbers beside it
    # the numbers behind the tables and figures, from the per-image probabilities and the partition's labels
    val = splits(tiny_run.partition).query("split == 'val'").set_index("image_id")
    kept = predictions(evaluation).query("weights == 'kept'")
    points = evaluation.read_csv("pr_curves_val.csv", keep_default_na=True)
    for variant, model, stem in (("baseline", "baseline", "baseline"), ("layer3", "AT layer3", "AT_layer3")):
        rows = kept[(kept["variant"] == variant) & kept["image_id"].isin(val.index)]
        assert sorted(rows["image_id"]) == sorted(val.index)
        truth = val.loc[rows["image_id"], "label"].map(CLASSES.index).to_numpy()
        assert (rows["label_idx"].to_numpy() == truth).all()
        chosen = rows[list(CLASSES)].to_numpy().argmax(axis=1)
        assert table.loc[model, "accuracy"] == pytest.approx((chosen == truth).mean(), abs=1e-4)
        confusion = evaluation.read_csv(f"confusion_{stem}_val.csv", index_col=0)
        expected = np.zeros((len(CLASSES), len(CLASSES)), int)
        np.add.at(expected, (truth, chosen), 1)
        np.testing.assert_array_equal(confusion.to_numpy(), expected)
        for cls in ("MEL", "NV"):
            k = CLASSES.index(cls)
            if (truth == k).any():
                precision, recall, _ = precision_recall_curve(truth == k, rows[cls].to_numpy())
                curve = points[(points["model"] == model) & (points["class"] == cls)]
                np.testing.assert_allclose(curve["precision"], precision)
                np.testing.assert_allclose(curve["recall"], recall)
    metrics = json.loads(storage.read_bytes(storage.join(evaluation.folder, "metrics.json")))
    assert metrics["val"]["baseline"]["accuracy"] == pytest.approx(table.loc["baseline", "accuracy"], abs=1e-9)
    page = (run_folder(tiny_run) / "report.html").read_text()
    for heading in ("Metric teacher", "Cluster-based partition", "Precision-recall curves", "Confusion matrices",
                    "Learning curves"):
        assert heading in page
    assert page.count("data:image/png;base64,") >= 1 + 4 + 8 + 2  # montage, PR per set, confusions, curves
    assert f"{tiny_run.report.split('report           ')[1].split()[0]}" == str(run_folder(tiny_run) / "report.html")


def test_pipeline_is_tracked_in_mlflow_and_registers_the_best_student(tiny_run: PipelineResult) -> None:
    client = MlflowClient(f"sqlite:///{run_folder(tiny_run) / 'mlflow.db'}")  # the default local store
    parent = client.get_run(tiny_run.mlflow_run)
    assert parent.info.status == "FINISHED" and parent.data.params["teacher.clusters"] == "8"
    assert "cluster_nmi_label" in parent.data.metrics
    children = {r.info.run_name: r for r in client.search_runs(
        [parent.info.experiment_id], f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'")}
    assert set(children) == {"preprocess", "teacher", "partition", "student:baseline", "student:layer3", "evaluation",
                             "attention"}
    files = {name: {a.path for a in client.list_artifacts(run.info.run_id)} for name, run in children.items()}
    assert {"cluster_montage.png", "assignments.csv", "teacher.pt"} <= files["teacher"]
    assert "partition_summary.csv" in files["partition"]
    assert {"table_val.csv", "pr_curves_val.png", "confusion_baseline_val.png"} <= files["evaluation"]
    assert "config.yaml" in {a.path for a in client.list_artifacts(parent.info.run_id)}
    losses = client.get_metric_history(children["student:layer3"].info.run_id, "at_layer3")
    assert [m.step for m in losses] == [0] and losses[0].value > 0
    champion = client.get_model_version_by_alias("skin-lesion-student", "champion")
    assert tiny_run.registered == f"skin-lesion-student/{champion.version}"
    # the best validation balanced accuracy (the first on a tie) was registered and holds the alias
    val = json.loads(tiny_run.evaluation.read_bytes("metrics.json"))["val"]
    scores = {"student:baseline": val["baseline"]["balanced_accuracy"],
              "student:layer3": val["AT layer3"]["balanced_accuracy"]}
    best = "student:layer3" if scores["student:layer3"] > scores["student:baseline"] else "student:baseline"
    assert champion.run_id == children[best].info.run_id, scores
    assert float(champion.tags["val_balanced_accuracy"]) == pytest.approx(scores[best])


@pytest.mark.slow
def test_attention_section_tables_and_panels(tiny_run: PipelineResult) -> None:
    """The attention stage: distances and lesion focus on validation, panels that agree with them, in the report
    and in MLflow."""
    attention = tiny_run.attention
    val = splits(tiny_run.partition).query("split == 'val'")
    scores = attention.read_csv(SCORES, keep_default_na=True)
    assert set(scores["image_id"]) == set(val["image_id"]) and attention.summary.images == len(val)
    assert attention.summary.masked == len(val)  # the synthetic set has every lesion's mask
    distance = distance_table(attention)
    assert list(distance.index) == ["baseline", "AT layer3"] and list(distance.columns) == list(LAYERS)
    assert (distance[["layer1", "layer2", "layer3"]] > 0).all().all()
    assert (distance["layer4"] == 0).all()  # 1×1 at 32 px: every map is the same single cell
    focus = focus_table(attention)
    assert list(focus.index) == ["teacher", "baseline", "AT layer3", UNIFORM]
    assert focus.to_numpy().min() >= 0 and focus.to_numpy().max() <= 1
    assert focus.loc["teacher", "layer4"] == pytest.approx(focus.loc[UNIFORM, "layer4"])  # a 1×1 map is uniform
    panels = panel_list(attention)
    assert 0 < len(panels) <= 2 * val["label"].nunique() and attention.summary.panels == len(panels)
    per_image = scores.set_index(["image_id", "model", "layer"])["at_distance"]
    for row in panels.itertuples():  # the driver's panels and the Ray Data pass measure the same distances
        data = json.loads(attention.read_bytes(row.file.replace(".png", ".json")))
        for layer, values in data["layers"].items():
            for model, value in values["distances"].items():
                assert value == pytest.approx(per_image[(row.image_id, model, layer)], rel=1e-4, abs=1e-9)
    page = (run_folder(tiny_run) / "report.html").read_text()
    assert "Attention: teacher and students, layer by layer" in page and "Lesion focus" in page
    assert all(f"{r.image_id} · {r.label} · {r.origin}" in page for r in panels.itertuples())
    client = MlflowClient(f"sqlite:///{run_folder(tiny_run) / 'mlflow.db'}")
    run = client.get_run(attention.run_id)
    assert {DISTANCE, FOCUS, "lesion_focus.png", panels["file"].iloc[0]} <= {
        a.path for a in client.list_artifacts(attention.run_id)}
    assert run.data.metrics["distance.AT layer3.layer3"] == pytest.approx(distance.loc["AT layer3", "layer3"],
                                                                         rel=1e-5)


@pytest.mark.slow
def test_skin_attention_with_the_registered_champion(tiny_run: PipelineResult, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch,
                                                     capsys: pytest.CaptureFixture) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{run_folder(tiny_run) / 'mlflow.db'}")
    image = tiny_run.example_image
    code = main(["attention", image, "--model", "models:/skin-lesion-student@champion", "--teacher",
                 tiny_run.teacher.publication.out, "--baseline", tiny_run.students[0].folder, "--out",
                 str(tmp_path)])
    assert code == 0
    data = json.loads(next(tmp_path.glob("attention_*.json")).read_text())
    assert {"teacher", "baseline"} <= set(data["layers"]["layer3"]["maps"]) and data["title"] == image
    assert "AT distance to the teacher" in capsys.readouterr().out


def test_predict_with_the_registered_champion(tiny_run: PipelineResult, sample_dataset: Path) -> None:
    image = sorted((sample_dataset / "ISIC_2019_Training_Input").glob("*.jpg"))[0]
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{run_folder(tiny_run) / 'mlflow.db'}"}
    result = subprocess.run([sys.executable, "-m", "skin_cli", "predict", str(image), "--model",
                             "models:/skin-lesion-student@champion"], capture_output=True, text=True, env=env,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.startswith(f"{image}: ") and result.stdout.split()[1] in CLASSES


def test_rerun_reuses_every_stage(tiny_run: PipelineResult) -> None:
    again = run_pipeline(tiny_config(str(run_folder(tiny_run))))
    assert all(stage.reused for stage in again.stages)
    assert again.data_path == tiny_run.data_path
    assert again.evaluation.publication.run == tiny_run.evaluation.publication.run
    # dropping a variant from the list retrains nothing: the kept student's key ignores the list
    fewer = run_pipeline(tiny_config(str(run_folder(tiny_run)), variants=("layer3",)))
    assert [s.reused for s in fewer.students] == [True] and not fewer.evaluation.reused
    assert fewer.students[0].folder == tiny_run.students[1].folder


def test_predict_gives_top_classes_and_a_clear_error_for_a_broken_image(
        tiny_run: PipelineResult, sample_dataset: Path, tmp_path: Path) -> None:
    images = sorted((sample_dataset / "ISIC_2019_Training_Input").glob("*.jpg"))[:3]
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not a jpeg")
    result = skin("predict", str(images[0]), str(broken), *map(str, images[1:]), "--model",
                  tiny_run.students[0].folder, "--top", "2")
    assert result.returncode == 1
    lines = result.stdout.splitlines()
    assert [l.split(":")[0] for l in lines] == [str(images[0]), *map(str, images[1:])]
    model, card = load_bundle(tiny_run.students[0].folder)
    for line, expected in zip(lines, predict_uris(model, card, [str(i) for i in images])):
        words = line.split(": ", 1)[1].split()
        assert words == [w for name, p in expected.top(2) for w in (name, f"{p:.3f}")]
    assert f"{broken}: error:" in result.stderr


def test_evaluate_an_external_dataset_by_origin(tiny_run: PipelineResult, sample_dataset: Path, tmp_path: Path,
                                                capsys: pytest.CaptureFixture) -> None:
    model = tiny_run.students[1].folder
    code = main(["evaluate", "--model", model, "--data", str(sample_dataset), "--out", str(tmp_path / "ext")])
    out = capsys.readouterr().out
    assert code == 0
    metrics = json.loads(storage.read_bytes(storage.join(require_publication(str(tmp_path / "ext")).folder,
                                                         "metrics.json")))
    assert set(metrics) == {"all", "HAM-only", "BCN-only", "non-HAM"}
    confusion = {name: np.asarray(m["AT layer3"]["confusion"]) for name, m in metrics.items()}
    manifest = load_isic(str(sample_dataset)).frame
    assert confusion["all"].sum() == len(manifest)
    assert confusion["BCN-only"].sum() == (manifest["origin"] == "BCN").sum()
    assert confusion["BCN-only"].sum(axis=1).tolist() == [
        int(((manifest["origin"] == "BCN") & (manifest["label"] == c)).sum()) for c in CLASSES]
    assert confusion["non-HAM"].sum() == (manifest["origin"] != "HAM").sum()
    for name in ("all", "HAM-only", "BCN-only", "non-HAM"):
        assert name in out
    assert storage.exists(str(tmp_path / "ext" / "_COMPLETE.json"))


@pytest.mark.usefixtures("ray_local")
def test_pipeline_with_everything_on_s3(s3_bucket: str, mlflow_server: str, caplog: pytest.LogCaptureFixture
                                       ) -> None:
    """Data, stage outputs, Ray Train checkpoints and (through the tracking server) MLflow artifacts on S3."""
    with caplog.at_level(logging.INFO, logger="skin_core.publish"):
        result = run_pipeline(tiny_config(f"{s3_bucket}/run", variants=("layer3",),
                                          tracking={"tracking_uri": mlflow_server, "experiment": "s3-pipeline"}))
    assert result.data_path.startswith(s3_bucket) and result.preprocessed.summary.written == 120
    for stage in result.stages:
        assert all(uri.startswith(f"{s3_bucket}/run/") for uri in stage.publication.uris())
    # Ray Train checkpoints went to the bucket too, and were removed from it once each stage was published
    logged = [r.getMessage() for r in caplog.records]
    for stage in (result.teacher, *result.students):
        assert f"removing {stage.publication.out}/checkpoints: the output is published" in logged
    assert not any("checkpoint_" in key for key in storage.list_tree(f"{s3_bucket}/run"))
    assert list(comparison(result.evaluation, "val").index) == ["AT layer3"]
    run = MlflowClient(mlflow_server).get_run(result.mlflow_run)
    artifacts = storage.list_tree(f"s3://{MLFLOW_BUCKET}")
    assert any(run.info.experiment_id in key and key.endswith("config.yaml") for key in artifacts)
    assert any(key.endswith("cluster_montage.png") for key in artifacts)


def test_skin_student_reuses_the_pipeline_student_with_the_same_settings(
        tiny_run: PipelineResult, capsys: pytest.CaptureFixture) -> None:
    """The CLI stage and the pipeline compute the same config key, so a finished student is found, not retrained."""
    layer3 = next(s for s in tiny_run.students if s.summary.variant == "layer3")
    code = main(["student", "--profile", "smoke", "--data", tiny_run.preprocessed.publication.out,
                 "--teacher", tiny_run.teacher.publication.out, "--partition", tiny_run.partition.publication.out,
                 "--out", layer3.publication.out, "--variant", "layer3"])
    assert code == 0
    assert f"layer3 student at {layer3.folder}" in capsys.readouterr().out


def test_skin_preprocess_and_teacher_find_the_pipelines_outputs_and_partition_splits_the_same(
        tiny_run: PipelineResult, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """Each stage command computes the pipeline's key (so it reuses the finished output); the partition, which
    needs no Ray, is computed afresh from the same teacher and gives the same split."""
    assert main(["preprocess", "--profile", "smoke", "--data", tiny_run.data_path, "--size", "32",
                 "--out", tiny_run.preprocessed.out]) == 0
    assert f"output           {tiny_run.preprocessed.out}  (reused: same input and config)" in capsys.readouterr().out
    assert main(["teacher", "--profile", "smoke", "--data", tiny_run.preprocessed.out,
                 "--out", tiny_run.teacher.out]) == 0
    assert f"teacher          {tiny_run.teacher.out}  (reused)" in capsys.readouterr().out
    assert main(["partition", "--profile", "smoke", "--teacher", tiny_run.teacher.out,
                 "--out", str(tmp_path / "partition")]) == 0
    s = tiny_run.partition.summary
    assert f"partition        train {s.train} · val {s.val} · test {s.test}" in capsys.readouterr().out
    again = load_output(str(tmp_path / "partition"), PartitionSummary)
    assert again.key == tiny_run.partition.key and again.summary == s
    pd.testing.assert_frame_equal(splits(again), splits(tiny_run.partition))
