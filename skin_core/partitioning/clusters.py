"""Cluster-aware partition: whole teacher clusters held out as the test set.

The paper holds out 8 of the 16 DeepCluster clusters, so the test images differ
in appearance (hair, rulers, lighting, borders) from everything trained on.

Rules, in order:

* **Lesions move as one.**  A lesion's images may fall in different clusters; a
  lesion goes to test if *any* of its images lies in a test cluster.  Every image
  of a test cluster is therefore in test (whole clusters held out, and no train
  or validation image shares a held-out cluster); the price is that a few
  images from training clusters ride along into test with their lesion.
* **Test clusters** are drawn at random for the seed; a draw is accepted when
  every class keeps at least 2 lesions outside test (one for train, one for
  validation).  Up to ``max_draws`` draws are tried before ``PartitionError``.
* **Train/validation** split the remaining lesions per class (a lesion's class is
  its images' majority label): each class sends the lesions whose image count is
  closest to ``val_fraction`` of its images to validation, at least one lesion to
  each side.
* **Test sets per origin**: ``test_set`` is ``HAM-test``, ``BCN-test`` or
  ``other`` on test rows and empty elsewhere.
* **Ranking hold-out** (``holdout_fraction`` > 0, for sweeps): before any of
  the above, that share of lesions (``lesion_holdout`` salted ``rank``; each
  class keeps ``MIN_LESIONS_OUTSIDE + 1`` lesions) becomes split ``holdout``.
  It depends on the lesion ids only, so every teacher's partition has the same
  holdout rows; the rules above split the remaining lesions.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import pandas as pd

from skin_core.classes import CLASSES, ORIGINS
from skin_core.partitioning.holdout import RANK_SALT, lesion_classes, lesion_holdout

logger = logging.getLogger(__name__)

SPLITS: tuple[str, ...] = ("train", "val", "test")
REQUIRED_COLUMNS: tuple[str, ...] = ("image_id", "label", "origin", "lesion_id", "cluster")
TEST_SET_BY_ORIGIN: dict[str, str] = {"HAM": "HAM-test", "BCN": "BCN-test"}
MIN_LESIONS_OUTSIDE = 2  # one for train, one for validation
HOLDOUT = "holdout"  # the split of lesions reserved before the cluster split (a sweep's ranking set)


class PartitionError(ValueError):
    """A partition that cannot satisfy its constraints (e.g. a class missing from train or val)."""


@dataclass(frozen=True, eq=False)  # eq=False: DataFrame fields have no boolean equality
class Partition:
    """Per-image assignment (image_id, lesion_id, label, origin, cluster, split, test_set) and the test clusters."""

    assignment: pd.DataFrame
    test_clusters: tuple[int, ...]
    seed: int

    def image_ids(self, split: str) -> list[str]:
        """Image ids of one split (``train``, ``val`` or ``test``)."""
        return self.assignment.loc[self.assignment["split"] == split, "image_id"].tolist()

    def summary(self) -> pd.DataFrame:
        """Image counts, rows (split, class), columns origins plus total; see ``partition_summary``."""
        return partition_summary(self.assignment)


def partition_summary(assignment: pd.DataFrame, classes: Sequence[str] = CLASSES) -> pd.DataFrame:
    """Split × class × origin image counts: a (split, class) row index, one column per origin and ``total``.

    Every combination appears (zeros included), so tables of two runs line up; ``to_csv`` keeps both index levels.
    """
    splits = SPLITS + ((HOLDOUT,) if (assignment["split"] == HOLDOUT).any() else ())
    index = pd.MultiIndex.from_product([splits, list(classes)], names=["split", "class"])
    counts = assignment.groupby(["split", "label", "origin"]).size().unstack("origin", fill_value=0)
    counts.index = counts.index.set_names(["split", "class"])
    origins = list(ORIGINS) + sorted(set(counts.columns) - set(ORIGINS))
    table = counts.reindex(index=index, columns=origins, fill_value=0).astype(int)
    table["total"] = table.sum(axis=1)
    return table


def partition_by_clusters(frame: pd.DataFrame, *, test_clusters: int = 8, val_fraction: float = 0.2,
                          seed: int = 0, classes: Sequence[str] = CLASSES, max_draws: int = 1000,
                          holdout_fraction: float = 0.0) -> Partition:
    """Hold out ``test_clusters`` whole clusters as test and split the rest into train/val by class.

    Deterministic for ``seed``.  Raises ``PartitionError`` naming the classes that
    cannot reach both train and validation for any tried choice of test clusters.
    ``holdout_fraction`` > 0 first reserves the ranking hold-out (module docstring).
    """
    check_inputs(frame, test_clusters, val_fraction, classes)
    reserved = ranking_holdout(frame, holdout_fraction)
    rest = frame[~reserved]
    check_inputs(rest, test_clusters, val_fraction, classes)
    lesions = lesion_table(rest)
    rng = np.random.default_rng(seed)
    chosen = choose_test_clusters(rest, lesions, test_clusters, classes, rng, max_draws)
    split = assign_lesions(lesions, chosen, val_fraction, classes, rng)
    held = pd.Series(HOLDOUT, index=pd.Index(frame.loc[reserved, "lesion_id"].unique()), dtype=object)
    assignment = build_assignment(frame, pd.concat([split, held]))
    logger.info("partition seed %d: test clusters %s; images train %d, val %d, test %d, holdout %d", seed,
                list(chosen), *(int((assignment["split"] == s).sum()) for s in (*SPLITS, HOLDOUT)))
    return Partition(assignment=assignment, test_clusters=chosen, seed=seed)


def check_inputs(frame: pd.DataFrame, test_clusters: int, val_fraction: float, classes: Sequence[str]) -> None:
    """Reject missing columns, unknown labels, duplicate images and out-of-range arguments."""
    missing = [c for c in REQUIRED_COLUMNS if c not in frame.columns]
    if missing:
        raise PartitionError(f"frame lacks column(s) {', '.join(missing)}; needs {', '.join(REQUIRED_COLUMNS)}")
    empty = [c for c in REQUIRED_COLUMNS if frame[c].isna().any()]
    if empty:
        raise PartitionError(f"missing values in column(s) {', '.join(empty)}")
    unknown = sorted(set(frame["label"]) - set(classes))
    if unknown:
        raise PartitionError(f"labels not in the class list: {', '.join(map(str, unknown))}")
    if frame["image_id"].duplicated().any():
        raise PartitionError("duplicate image_id values in the frame")
    n_clusters = frame["cluster"].nunique()
    if not 1 <= test_clusters < n_clusters:
        raise PartitionError(f"test_clusters={test_clusters} must be in [1, {n_clusters - 1}] "
                             f"({n_clusters} clusters in the frame)")
    if not 0.0 < val_fraction < 1.0:
        raise PartitionError(f"val_fraction={val_fraction} must be in (0, 1)")


def ranking_holdout(frame: pd.DataFrame, fraction: float) -> np.ndarray:
    """Rows of the lesions reserved as the ranking hold-out (none when ``fraction`` is 0)."""
    if fraction == 0:
        return np.zeros(len(frame), dtype=bool)
    return lesion_holdout(frame["lesion_id"], fraction, RANK_SALT, labels=frame["label"].tolist(),
                          keep=MIN_LESIONS_OUTSIDE + 1)


def lesion_table(frame: pd.DataFrame) -> pd.DataFrame:
    """One row per lesion: majority label, image count and the set of clusters its images fall in."""
    grouped = frame.groupby("lesion_id", sort=True)
    lesions = pd.DataFrame({
        "label": lesion_classes(frame["lesion_id"], frame["label"]),
        "images": grouped.size(),
        "clusters": grouped["cluster"].agg(lambda s: frozenset(int(c) for c in s)),
    })
    mixed = int((grouped["label"].nunique() > 1).sum())
    if mixed:
        logger.warning("%d lesion(s) have images with different labels; using each one's majority label", mixed)
    return lesions


def choose_test_clusters(frame: pd.DataFrame, lesions: pd.DataFrame, k: int, classes: Sequence[str],
                         rng: np.random.Generator, max_draws: int) -> tuple[int, ...]:
    """Draw ``k`` clusters until every class keeps ``MIN_LESIONS_OUTSIDE`` lesions outside test."""
    cluster_ids = np.array(sorted(int(c) for c in frame["cluster"].unique()))
    best: list[str] | None = None
    for _ in range(max_draws):
        chosen = tuple(sorted(int(c) for c in rng.choice(cluster_ids, size=k, replace=False)))
        short = short_classes(lesions, chosen, classes)
        if not short:
            return chosen
        best = short if best is None or len(short) < len(best) else best
    raise PartitionError(f"class(es) {', '.join(best or [])} keep fewer than {MIN_LESIONS_OUTSIDE} lesions "
                         f"outside the test clusters in all {max_draws} draws of {k} test clusters, so they "
                         f"cannot be in both train and validation")


def is_test(lesions: pd.DataFrame, test_clusters: Sequence[int]) -> pd.Series:
    """Lesions with any image in a test cluster."""
    held = frozenset(test_clusters)
    return lesions["clusters"].map(lambda cs: not cs.isdisjoint(held))


def short_classes(lesions: pd.DataFrame, test_clusters: Sequence[int], classes: Sequence[str]) -> list[str]:
    """Classes with fewer than ``MIN_LESIONS_OUTSIDE`` lesions outside the test clusters, in class order."""
    outside = lesions.loc[~is_test(lesions, test_clusters), "label"].value_counts()
    return [c for c in classes if outside.get(c, 0) < MIN_LESIONS_OUTSIDE]


def assign_lesions(lesions: pd.DataFrame, test_clusters: Sequence[int], val_fraction: float,
                   classes: Sequence[str], rng: np.random.Generator) -> pd.Series:
    """Split per lesion: test by cluster, then a per-class train/val split of the rest."""
    split = pd.Series("train", index=lesions.index, dtype=object)
    test = is_test(lesions, test_clusters)
    split[test] = "test"
    for cls in classes:
        pool = lesions[~test & (lesions["label"] == cls)]
        split[val_lesions(pool["images"], val_fraction, rng)] = "val"
    return split


def val_lesions(images: pd.Series, val_fraction: float, rng: np.random.Generator) -> list:
    """Lesion ids (shuffled) whose image total is closest to ``val_fraction``, leaving ≥1 lesion in train."""
    if len(images) < MIN_LESIONS_OUTSIDE:
        return []
    order = images.index[rng.permutation(len(images))]
    cumulative = images[order].cumsum().to_numpy()
    target = val_fraction * cumulative[-1]
    # k lesions to validation, 1 <= k <= n-1: the prefix whose image count is nearest the target
    k = 1 + int(np.argmin(np.abs(cumulative[:-1] - target)))
    return list(order[:k])


def build_assignment(frame: pd.DataFrame, split: pd.Series) -> pd.DataFrame:
    """Per-image table in the frame's order: the lesion's split (``split`` by lesion id) and the test set name."""
    out = frame[["image_id", "lesion_id", "label", "origin", "cluster"]].reset_index(drop=True).copy()
    out["split"] = out["lesion_id"].map(split)
    test_set = out["origin"].map(TEST_SET_BY_ORIGIN).fillna("other")
    out["test_set"] = test_set.where(out["split"] == "test", "")
    return out
