"""Cluster-aware partition on a synthetic frame: whole clusters in test, lesions kept together, classes covered."""

from __future__ import annotations

import dataclasses
import io

import numpy as np
import pandas as pd
import pytest

from skin_core.classes import CLASSES, ORIGINS
from skin_core.config import PartitionConfig
from skin_core.data.isic import load_isic
from skin_core.partitioning import SPLITS, PartitionError, partition_by_clusters
from skin_core.partitioning.clusters import partition_with
from skin_core.synth import generate_dataset

# Imbalanced like ISIC 2019 (NV dominant, DF/VASC rare), in CLASSES order.
CLASS_P = np.array([0.18, 0.45, 0.13, 0.05, 0.10, 0.025, 0.025, 0.04])
PREFIX = {"HAM": "HAM_", "BCN": "BCN_", "MSK": "MSK4_", "unknown": ""}


def synthetic_frame(n_images: int = 800, n_clusters: int = 16, seed: int = 0) -> pd.DataFrame:
    """Lesions of 1–3 images in all origins; a lesion's extra images sometimes land in another cluster."""
    rng = np.random.default_rng(seed)
    rows: list[dict] = []
    lesion = 0
    while len(rows) < n_images:
        label = CLASSES[rng.choice(len(CLASSES), p=CLASS_P)]
        origin = ORIGINS[rng.integers(len(ORIGINS))]
        home = int(rng.integers(n_clusters))
        for k in range(int(rng.choice([1, 2, 3], p=[0.7, 0.2, 0.1]))):
            image_id = f"ISIC_{len(rows):07d}"
            cluster = int(rng.integers(n_clusters)) if k and rng.random() < 0.4 else home
            lesion_id = f"{PREFIX[origin]}{lesion:07d}" if origin != "unknown" else f"ISIC_L{lesion:06d}"
            rows.append(dict(image_id=image_id, label=label, origin=origin, lesion_id=lesion_id, cluster=cluster))
        lesion += 1
    return pd.DataFrame(rows[:n_images])


@pytest.fixture(scope="module")
def frame() -> pd.DataFrame:
    return synthetic_frame()


@pytest.fixture(scope="module")
def part(frame: pd.DataFrame):
    return partition_by_clusters(frame, test_clusters=8, val_fraction=0.2, seed=0)


def test_frame_has_lesions_spanning_clusters(frame: pd.DataFrame) -> None:
    spans = frame.groupby("lesion_id")["cluster"].nunique()
    assert (spans > 1).sum() >= 10 and set(frame["origin"]) == set(ORIGINS) and len(frame) == 800


def test_whole_clusters_are_held_out(frame: pd.DataFrame, part) -> None:
    a = part.assignment
    assert len(part.test_clusters) == 8 and len(set(part.test_clusters)) == 8
    assert list(a["image_id"]) == list(frame["image_id"])
    in_test_cluster = a["cluster"].isin(part.test_clusters)
    assert (a.loc[in_test_cluster, "split"] == "test").all()
    # Train and validation never share a held-out cluster; test's extra images come with a spanning lesion.
    assert not a.loc[a["split"] != "test", "cluster"].isin(part.test_clusters).any()
    extra = a[(a["split"] == "test") & ~in_test_cluster]
    assert extra["lesion_id"].isin(a.loc[in_test_cluster, "lesion_id"]).all()


def test_no_lesion_on_two_sides(part) -> None:
    assert (part.assignment.groupby("lesion_id")["split"].nunique() == 1).all()


def test_every_class_in_train_and_val(part) -> None:
    a = part.assignment
    for split in ("train", "val"):
        assert set(a.loc[a["split"] == split, "label"]) == set(CLASSES), split


def test_val_fraction_per_class(part) -> None:
    rest = part.assignment[part.assignment["split"] != "test"]
    val_images = rest.groupby("label")["split"].agg(lambda s: int((s == "val").sum()))
    sizes = rest["label"].value_counts()
    largest_lesion = rest.groupby(["label", "lesion_id"]).size().groupby("label").max()
    for cls in CLASSES:
        # whole lesions go to validation, as many as come nearest 20 % of the class's images: within half a lesion
        assert abs(val_images[cls] - 0.2 * sizes[cls]) <= largest_lesion[cls] / 2, (cls, val_images[cls], sizes[cls])
    assert abs((rest["split"] == "val").mean() - 0.2) < 0.03


def test_test_sets_by_origin(part) -> None:
    a = part.assignment
    test = a[a["split"] == "test"]
    expected = test["origin"].map({"HAM": "HAM-test", "BCN": "BCN-test", "MSK": "other", "unknown": "other"})
    assert (test["test_set"] == expected).all()
    assert set(test["test_set"]) == {"HAM-test", "BCN-test", "other"}
    assert (a.loc[a["split"] != "test", "test_set"] == "").all()


def test_same_seed_same_partition_other_seed_differs(frame: pd.DataFrame, part) -> None:
    again = partition_by_clusters(frame, seed=0)
    pd.testing.assert_frame_equal(again.assignment, part.assignment)
    assert again.test_clusters == part.test_clusters
    other = partition_by_clusters(frame, seed=1)
    assert other.test_clusters != part.test_clusters
    assert not other.assignment["split"].equals(part.assignment["split"])


def test_summary_counts_split_class_origin(frame: pd.DataFrame, part) -> None:
    table = part.summary()
    assert list(table.index.names) == ["split", "class"] and len(table) == len(SPLITS) * len(CLASSES)
    assert list(table.columns) == [*ORIGINS, "total"]
    assert table["total"].sum() == len(frame)
    a = part.assignment
    assert table.loc[("val", "NV"), "HAM"] == ((a["split"] == "val") & (a["label"] == "NV")
                                               & (a["origin"] == "HAM")).sum()
    back = pd.read_csv(io.StringIO(table.to_csv()), index_col=[0, 1])
    assert back["total"].sum() == len(frame)


def test_one_lesion_class_raises_naming_it(frame: pd.DataFrame) -> None:
    df_lesions = frame.loc[frame["label"] == "DF", "lesion_id"].unique()
    reduced = frame[(frame["label"] != "DF") | (frame["lesion_id"] == df_lesions[0])]
    with pytest.raises(PartitionError, match=r"\bDF\b") as err:
        partition_by_clusters(reduced, max_draws=50)
    assert "MEL" not in str(err.value) and "NV" not in str(err.value)


def test_retries_test_clusters_until_rare_class_survives(frame: pd.DataFrame) -> None:
    # DF left with exactly two single-image lesions, in clusters 3 and 5: both must stay outside test.
    keep = frame[frame["label"] != "DF"]
    df_rows = pd.DataFrame([dict(image_id=f"DF{i}", label="DF", origin="HAM", lesion_id=f"HAM_DF{i}", cluster=c)
                            for i, c in enumerate((3, 5))])
    data = pd.concat([keep, df_rows], ignore_index=True)
    for seed in range(4):
        part = partition_by_clusters(data, seed=seed)
        assert not {3, 5} & set(part.test_clusters)
        splits = part.assignment.set_index("image_id").loc[["DF0", "DF1"], "split"]
        assert sorted(splits) == ["train", "val"]


@pytest.mark.parametrize("kwargs, message", [
    (dict(test_clusters=16), "test_clusters"),
    (dict(test_clusters=0), "test_clusters"),
    (dict(val_fraction=1.0), "val_fraction"),
])
def test_bad_arguments_raise(frame: pd.DataFrame, kwargs: dict, message: str) -> None:
    with pytest.raises(PartitionError, match=message):
        partition_by_clusters(frame, **kwargs)


def test_missing_column_raises(frame: pd.DataFrame) -> None:
    with pytest.raises(PartitionError, match="lesion_id"):
        partition_by_clusters(frame.drop(columns="lesion_id"))


# ---------------------------------------------------------------- origins, explicit ids, test share


def test_origins_keep_other_collections_out_of_every_split(frame: pd.DataFrame) -> None:
    part = partition_by_clusters(frame, origins=("HAM", "BCN"), seed=0)
    a = part.assignment
    assert set(a["origin"]) == {"HAM", "BCN"}  # no MSK or unknown image in train, val or test
    assert sorted(a["image_id"]) == sorted(frame.loc[frame["origin"].isin(["HAM", "BCN"]), "image_id"])
    assert set(a.loc[a["split"] == "test", "test_set"]) == {"HAM-test", "BCN-test"}
    for split in ("train", "val"):
        assert set(a.loc[a["split"] == split, "label"]) == set(CLASSES), split
    # nothing else moves: for the same test clusters, the HAM/BCN test images are those of the unfiltered partition
    chosen = list(part.test_clusters)
    filtered = partition_by_clusters(frame, origins=("HAM", "BCN"), test_cluster_ids=chosen).assignment
    whole = partition_by_clusters(frame, test_cluster_ids=chosen).assignment

    def in_test(table: pd.DataFrame) -> list[str]:
        return sorted(table.loc[(table["split"] == "test") & table["origin"].isin(["HAM", "BCN"]), "image_id"])

    assert in_test(filtered) == in_test(whole) == in_test(a)
    with pytest.raises(PartitionError, match="no image of origin"):
        partition_by_clusters(frame[frame["origin"] == "HAM"], origins=("MSK",))


def test_explicit_test_cluster_ids_are_held_out(frame: pd.DataFrame) -> None:
    part = partition_by_clusters(frame, test_cluster_ids=(1, 4, 7), seed=3)
    a = part.assignment
    assert part.test_clusters == (1, 4, 7)
    assert (a.loc[a["cluster"].isin([1, 4, 7]), "split"] == "test").all()
    assert not a.loc[a["split"] != "test", "cluster"].isin([1, 4, 7]).any()
    with pytest.raises(PartitionError, match="not clusters"):
        partition_by_clusters(frame, test_cluster_ids=(2, 99))


def test_explicit_ids_that_empty_a_class_raise_naming_it(frame: pd.DataFrame) -> None:
    keep = frame[frame["label"] != "DF"]
    df_rows = pd.DataFrame([dict(image_id=f"DF{i}", label="DF", origin="HAM", lesion_id=f"HAM_DF{i}", cluster=c)
                            for i, c in enumerate((3, 5, 5))])
    with pytest.raises(PartitionError, match=r"leave class\(es\) DF fewer"):
        partition_by_clusters(pd.concat([keep, df_rows], ignore_index=True), test_cluster_ids=(5,))


@pytest.fixture(scope="module")
def synthetic_2000(tmp_path_factory: pytest.TempPathFactory) -> pd.DataFrame:
    """2,000 images of the synthetic generator (ISIC class and origin mix, repeated lesions) with uneven
    synthetic clusters: each lesion's home cluster drawn from Dirichlet(0.5) weights over 16, a third of
    the extra images of a lesion elsewhere."""
    root = tmp_path_factory.mktemp("synth2000")
    generate_dataset(root, n=2000, size=32, seed=5)
    frame = load_isic(str(root)).frame[["image_id", "label", "origin", "lesion_id"]].copy()
    rng = np.random.default_rng(5)
    weights = rng.dirichlet(np.full(16, 0.5))
    home = {lesion: int(rng.choice(16, p=weights)) for lesion in sorted(frame["lesion_id"].unique())}
    first = ~frame["lesion_id"].duplicated()
    stray = ~first & (rng.random(len(frame)) < 1 / 3)
    frame["cluster"] = np.where(stray, rng.integers(16, size=len(frame)), frame["lesion_id"].map(home))
    assert len(frame) == 2000 and frame["lesion_id"].duplicated().sum() > 50
    return frame


@pytest.mark.parametrize("target", [0.44, 0.25])
@pytest.mark.parametrize("count", [8, 0])
def test_test_share_rule_lands_near_its_target(synthetic_2000: pd.DataFrame, target: float, count: int) -> None:
    part = partition_by_clusters(synthetic_2000, test_clusters=count, test_share=target, origins=("HAM", "BCN"),
                                 seed=0)
    a = part.assignment
    share = (a["split"] == "test").mean()
    assert abs(share - target) <= 0.05, (share, part.test_clusters)
    assert count == 0 or len(part.test_clusters) == count
    assert set(a["origin"]) == {"HAM", "BCN"}
    for split in ("train", "val"):
        assert set(a.loc[a["split"] == split, "label"]) == set(CLASSES), split
    assert (a.loc[a["cluster"].isin(part.test_clusters), "split"] == "test").all()


def test_test_share_rule_beats_a_random_draw(synthetic_2000: pd.DataFrame) -> None:
    """Not luck: over seeds, random draws of 8 clusters scatter around the target; the rule does not."""
    def gap(**kwargs) -> float:
        a = partition_by_clusters(synthetic_2000, test_clusters=8, **kwargs).assignment
        return abs((a["split"] == "test").mean() - 0.44)

    drawn = [gap(seed=s) for s in range(5)]
    aimed = [gap(seed=s, test_share=0.44) for s in range(5)]
    assert max(aimed) <= 0.05 and max(aimed) < np.mean(drawn)


@pytest.mark.parametrize("kwargs, message", [
    (dict(test_cluster_ids=(1,), test_share=0.4), "not both"),
    (dict(test_share=1.2), "test_share"),
    (dict(test_clusters=0, test_share=0.0), "test_clusters"),
])
def test_bad_choice_arguments_raise(frame: pd.DataFrame, kwargs: dict, message: str) -> None:
    with pytest.raises(PartitionError, match=message):
        partition_by_clusters(frame, **kwargs)


def test_partition_with_passes_every_setting(frame: pd.DataFrame) -> None:
    config = PartitionConfig(test_clusters=0, test_share=0.3, origins=("HAM", "BCN", "MSK"), val_fraction=0.3,
                             seed=4, holdout_fraction=0.1)
    # a new PartitionConfig field must be passed on too
    assert {f.name for f in dataclasses.fields(PartitionConfig)} == {
        "test_clusters", "test_cluster_ids", "test_share", "origins", "val_fraction", "seed", "holdout_fraction"}
    direct = partition_by_clusters(frame, test_clusters=0, test_share=0.3, origins=("HAM", "BCN", "MSK"),
                                   val_fraction=0.3, seed=4, holdout_fraction=0.1)
    assert (direct.assignment["split"] == "holdout").any()
    pd.testing.assert_frame_equal(partition_with(frame, config).assignment, direct.assignment)


def test_ranking_holdout_is_reserved_before_the_cluster_split_and_ignores_the_clusters(frame: pd.DataFrame) -> None:
    reclustered = frame.assign(cluster=(frame["cluster"] * 7 + 3) % 16)  # another teacher's clusters
    one = partition_by_clusters(frame, test_clusters=8, seed=0, holdout_fraction=0.2).assignment
    two = partition_by_clusters(reclustered, test_clusters=8, seed=1, holdout_fraction=0.2).assignment
    held = set(one.loc[one["split"] == "holdout", "image_id"])
    assert held == set(two.loc[two["split"] == "holdout", "image_id"]) and 0.1 < len(held) / len(frame) < 0.3
    assert one.groupby("lesion_id")["split"].nunique().max() == 1  # lesions stay whole
    assert partition_by_clusters(frame, test_clusters=8, seed=0).assignment["split"].ne("holdout").all()
    rest = one[one["split"] != "holdout"]
    lesions = rest.groupby("lesion_id")["label"].first().value_counts()
    assert (lesions.reindex(list(CLASSES), fill_value=0) >= 3).all()  # every class keeps 3 lesions outside it
    table = partition_by_clusters(frame, test_clusters=8, seed=0, holdout_fraction=0.2).summary()
    assert table.loc["holdout", "total"].sum() == len(held)
