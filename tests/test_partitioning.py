"""Cluster-aware partition on a synthetic frame: whole clusters in test, lesions kept together, classes covered."""

from __future__ import annotations

import io

import numpy as np
import pandas as pd
import pytest

from skin_core.classes import CLASSES, ORIGINS
from skin_core.partitioning import SPLITS, PartitionError, partition_by_clusters

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
