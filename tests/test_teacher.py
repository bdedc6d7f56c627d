"""The metric teacher: core steps in one process, the 2-worker Ray Train run, resume after a killed worker."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
import torch

from conftest import killing_a_train_worker
from raytasks.preprocess import PreprocessSummary, read_table, run_preprocess
from raytasks.capacity import Capacity
from raytasks.runtime import ResourceError, WorkerPlan, check_capacity, plan_workers
from raytasks.stages import StageOutput, run_stage
from raytasks.teacher import (ASSIGNMENTS, HISTORY, MONTAGE, MONTAGE_PER_ROW, MONTAGE_TABLE, WEIGHTS, TeacherSummary,
                              montage_members, teacher_stage)
from raytasks.tracking import TrackedRun
from skin_core.config import PipelineConfig, PreprocessConfig, ResourcesConfig, from_dict
from skin_core.losses.multi_similarity import MultiSimilarityCriterion
from skin_core.models import Backbone
from skin_core.synth import generate_dataset
from skin_core.clustering import cluster_nmi
from skin_core.preprocessing.pipeline import decode_pngs
from skin_core.training.teacher import cluster_features, cluster_globally, extract_features, teacher_step


def teacher_config(out: Path, **teacher: object) -> PipelineConfig:
    """Two DDP workers (explicitly: auto would pick one on this node), a global batch of 32."""
    return from_dict(PipelineConfig, {
        "out": str(out), "model": {"arch": "resnet18", "embedding_dim": 16},
        "teacher": {"epochs": 2, "clusters": 4, "pca_dim": 8, "batch_size": 32, **teacher},
        "resources": {"num_workers": 2, "cpus_per_worker": 0.5, "data_cpus": 1.0}})


def run_teacher(preprocessed: StageOutput, out: str, config: PipelineConfig) -> StageOutput[TeacherSummary]:
    return run_stage(teacher_stage(preprocessed, config), out, TrackedRun())


@pytest.fixture(scope="module")
def preprocessed(ray_local: None, tmp_path_factory: pytest.TempPathFactory) -> StageOutput[PreprocessSummary]:
    root = tmp_path_factory.mktemp("teacher")
    generate_dataset(root / "data", n=64, size=48, seed=1)
    return run_preprocess(str(root / "data"), str(root / "pre"), PreprocessConfig(size=32))


def cpu_nodes(*cpus: float) -> Capacity:
    return Capacity.of_nodes([{"CPU": c} for c in cpus])


def test_resource_check_refuses_a_request_that_would_starve_ray_data() -> None:
    resources = ResourcesConfig(num_workers=2, cpus_per_worker=1.0, data_cpus=1.0)
    with pytest.raises(ResourceError, match="lower resources.cpus_per_worker"):
        check_capacity(plan_workers(resources, cpu_nodes(2.0)), resources, cpu_nodes(2.0))
    fits = ResourcesConfig(num_workers=2, cpus_per_worker=0.5, data_cpus=1.0)
    check_capacity(plan_workers(fits, cpu_nodes(2.0)), fits, cpu_nodes(2.0))


def test_auto_workers_follow_the_resources() -> None:
    auto = ResourcesConfig()  # num_workers 0
    # one CPU node: one worker using every core (no DDP between one-thread workers)
    assert plan_workers(auto, cpu_nodes(2.0)) == WorkerPlan(1, 1.0, False, 2)
    # several CPU nodes: one worker per node, each with its node's cores
    assert plan_workers(auto, cpu_nodes(8.0, 8.0, 8.0)) == WorkerPlan(3, 1.0, False, 8)
    # GPUs: one worker per GPU, threads from the worker's CPUs
    gpu = ResourcesConfig(use_gpu=True, cpus_per_worker=4)
    assert plan_workers(gpu, Capacity.of_nodes([{"CPU": 16.0, "GPU": 4.0}] * 2)) == WorkerPlan(8, 4.0, True, 4)
    # an explicit count is kept; two workers on one 2-core node get one thread each
    assert plan_workers(ResourcesConfig(num_workers=2, cpus_per_worker=0.5), cpu_nodes(2.0)) == \
        WorkerPlan(2, 0.5, False, 1)


def test_non_finite_loss_stops_loudly() -> None:
    model = Backbone("resnet18", embedding_dim=8)
    x = torch.full((4, 3, 32, 32), float("nan"))
    with pytest.raises(FloatingPointError):
        teacher_step(model, x, torch.tensor([0, 0, 1, 1]), MultiSimilarityCriterion(),
                     torch.optim.SGD(model.parameters(), lr=0.1))


def test_clustering_in_one_process_is_plain_kmeans() -> None:
    rng = np.random.default_rng(0)
    features = np.concatenate([rng.normal(c * 5, 1, (30, 12)) for c in range(3)]).astype(np.float32)
    ids = np.array([f"img{i}" for i in range(90)])
    found = cluster_globally(ids, features, k=3, pca_dim=8, seed=4)
    direct = cluster_features(features, 3, 8, seed=4)
    assert np.array_equal(found.local(), direct.assignments) and (found.offset, found.count) == (0, 90)
    assert np.array_equal(found.sizes, np.bincount(direct.assignments, minlength=3))


@pytest.fixture(scope="module")
def two_workers(preprocessed: StageOutput, tmp_path_factory: pytest.TempPathFactory) -> StageOutput[TeacherSummary]:
    """One 2-worker teacher run (2 epochs), read by the tests below."""
    root = tmp_path_factory.mktemp("two-workers")
    return run_teacher(preprocessed, str(root / "teacher"), teacher_config(root))


def test_two_worker_run_clusters_every_image_once(preprocessed: StageOutput,
                                                  two_workers: StageOutput[TeacherSummary]) -> None:
    result = two_workers
    table = result.read_csv(ASSIGNMENTS)
    ids = read_table(preprocessed, columns=["image_id"])["image_id"]
    assert sorted(table["image_id"]) == sorted(ids) and table["image_id"].is_unique
    assert sorted(table["cluster"].unique()) == [0, 1, 2, 3]  # every cluster holds an image
    assert result.summary.cluster_sizes == tuple(np.bincount(table["cluster"], minlength=4))
    history = result.read_csv(HISTORY, keep_default_na=True)
    assert list(history["epoch"]) == [0, 1, 2] and history["world_size"].iloc[0] == 2
    assert np.isfinite(history["loss"].iloc[:2]).all() and (history["pos_pairs"].iloc[:2] > 0).all()
    assert np.isfinite(history["nmi_prev"].iloc[1:]).all()
    montage = cv2.imread(result.file(MONTAGE))
    assert montage is not None and montage.shape[0] > 4 * 32
    model = Backbone("resnet18", embedding_dim=16, weights=result.file(WEIGHTS))  # weights_only load
    assert model.eval()(torch.zeros(1, 3, 32, 32))["embedding"].shape == (1, 16)
    assert run_teacher(preprocessed, result.out, teacher_config(Path(result.out).parent)).reused


def test_teacher_clusters_only_its_origins(preprocessed: StageOutput, tmp_path: Path) -> None:
    """teacher.origins as in the paper (MSK excluded): no MSK image is clustered, every other one is."""
    origins = read_table(preprocessed, columns=["image_id", "origin"])
    assert (origins["origin"] == "MSK").sum() >= 1  # the set has MSK images to leave out
    config = teacher_config(tmp_path, epochs=0, origins=["HAM", "BCN", "unknown"])  # epoch 0 clusters only
    table = run_teacher(preprocessed, str(tmp_path / "teacher"), config).read_csv(ASSIGNMENTS)
    assert sorted(table["image_id"]) == sorted(origins.loc[origins["origin"] != "MSK", "image_id"])
    assert "MSK" not in set(table["origin"])


def test_published_clusters_are_kmeans_of_the_published_weights(preprocessed: StageOutput,
                                                                two_workers: StageOutput[TeacherSummary]) -> None:
    """The last epoch clusters the final network: its features, whitened, give the published assignments."""
    table = two_workers.read_csv(ASSIGNMENTS)  # in the gathered order k-means saw (rank 0's rows first)
    pixels = read_table(preprocessed, columns=["image_id", "image"]).set_index("image_id").loc[table["image_id"]]
    images = torch.from_numpy(decode_pngs(list(pixels["image"])))
    model = Backbone("resnet18", embedding_dim=16, weights=two_workers.file(WEIGHTS))
    config = teacher_config(Path("unused"))
    found = cluster_features(extract_features(model, images, 64, torch.device("cpu")), 4, 8,
                             seed=config.seed * 1000 + config.teacher.epochs)
    assert cluster_nmi(found.assignments, table["cluster"].to_numpy()) > 0.9
    same = found.assignments == table["cluster"].to_numpy()
    np.testing.assert_allclose(found.distances[same], table["distance"].to_numpy()[same], rtol=1e-3, atol=1e-4)


def test_the_montage_table_shows_each_cluster_nearest_first(two_workers: StageOutput[TeacherSummary]) -> None:
    table, shown = two_workers.read_csv(ASSIGNMENTS), two_workers.read_csv(MONTAGE_TABLE)
    assert set(shown["cluster"]) == set(table["cluster"])
    merged = shown.merge(table, on="image_id", suffixes=("", "_assigned"))
    assert len(merged) == len(shown) and (merged["cluster"] == merged["cluster_assigned"]).all()
    for cluster, rows in shown.groupby("cluster"):
        members = table[table["cluster"] == cluster]
        assert len(rows) == min(MONTAGE_PER_ROW, len(members))
        assert rows["rank"].tolist() == list(range(len(rows)))
        assert rows["distance"].is_monotonic_increasing  # nearest the centroid first
        hidden = members[~members["image_id"].isin(rows["image_id"])]
        assert hidden.empty or rows["distance"].max() <= hidden["distance"].min()


def test_killed_worker_resumes_from_checkpoint(preprocessed: StageOutput, tmp_path: Path) -> None:
    out = tmp_path / "teacher"
    with killing_a_train_worker(out / "checkpoints") as killed:
        result = run_teacher(preprocessed, str(out), teacher_config(tmp_path, epochs=4))
    assert killed, "no worker was killed: the run ended before its first checkpoint"
    history = result.read_csv(HISTORY, keep_default_na=True)
    assert list(history["epoch"]) == [0, 1, 2, 3, 4]  # every epoch once: nothing redone, nothing lost
    assert (history["attempt_first_epoch"] > 0).any()  # the restarted workers began after epoch 0
    assert pd.Series(history["attempt_first_epoch"]).is_monotonic_increasing


def test_montage_members_are_each_clusters_nearest_images() -> None:
    rng = np.random.default_rng(3)
    table = pd.DataFrame({"image_id": [f"img{i}" for i in range(30)], "cluster": rng.integers(0, 3, 30),
                          "distance": rng.random(30), "label": "NV"})
    shown = montage_members(table, per_row=4)
    for cluster, members in table.groupby("cluster"):
        nearest = members["image_id"].to_numpy()[np.argsort(members["distance"].to_numpy())[:4]].tolist()
        assert shown.loc[shown["cluster"] == cluster].sort_values("rank")["image_id"].tolist() == nearest
