"""Cluster-aware partition: whole teacher clusters held out as the test set.

The paper holds out 8 of the 16 DeepCluster clusters, so the test images differ
in appearance (hair, rulers, lighting, borders) from everything trained on.

Rules, in order:

* **Lesions move as one.**  A lesion's images may fall in different clusters; a
  lesion goes to test if *any* of its images lies in a test cluster.  Every image
  of a test cluster is therefore in test (whole clusters held out, and no train
  or validation image shares a held-out cluster); the price is that a few
  images from training clusters ride along into test with their lesion.
* **Origins**: with ``origins`` given, only images of those origins enter the
  partition (the paper trains, validates and tests on HAM and BCN only); the
  rest get no row.  A lesion has one origin, so this never splits a lesion.
* **Test clusters** must leave every class at least 2 lesions outside test (one
  for train, one for validation).  They are ``test_cluster_ids`` when given (a
  choice that breaks the rule raises ``PartitionError``); else, with
  ``test_share`` > 0, the ``test_clusters`` clusters (any number when 0) whose
  test set is nearest that share of the images: the best of ``max_draws``
  seeded draws, improved by swapping clusters in and out while that brings it
  nearer; else ``test_clusters`` clusters drawn at random for the seed, the first
  draw that keeps the rule (``PartitionError`` after ``max_draws``).
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
from skin_core.config import PartitionConfig
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


def partition_by_clusters(frame: pd.DataFrame, *, test_clusters: int = 8, test_cluster_ids: Sequence[int] = (),
                          test_share: float = 0.0, origins: Sequence[str] = (), val_fraction: float = 0.2,
                          seed: int = 0, classes: Sequence[str] = CLASSES, max_draws: int = 1000,
                          holdout_fraction: float = 0.0) -> Partition:
    """Hold out whole clusters as test (see the module's rules) and split the rest into train/val by class.

    Deterministic for ``seed``.  Raises ``PartitionError`` naming the classes that
    cannot reach both train and validation for any tried choice of test clusters.
    ``holdout_fraction`` > 0 first reserves the ranking hold-out (module docstring).
    """
    check_inputs(frame, test_clusters, test_cluster_ids, test_share, val_fraction, classes)
    frame = of_origins(frame, origins)
    reserved = ranking_holdout(frame, holdout_fraction)
    rest = frame[~reserved]
    check_inputs(rest, test_clusters, test_cluster_ids, test_share, val_fraction, classes)
    lesions = lesion_table(rest)
    rng = np.random.default_rng(seed)
    cover = ClusterCover(lesions, classes)
    if test_cluster_ids:
        chosen = cover.require(cover.choice(test_cluster_ids))
    elif test_share:
        chosen = aim_at_share(cover, test_clusters, test_share, rng, max_draws)
    else:
        chosen = draw_test_clusters(cover, test_clusters, rng, max_draws)
    split = assign_lesions(lesions, chosen, val_fraction, classes, rng)
    held = pd.Series(HOLDOUT, index=pd.Index(frame.loc[reserved, "lesion_id"].unique()), dtype=object)
    assignment = build_assignment(frame, pd.concat([split, held]))
    logger.info("partition seed %d: test clusters %s (%.3f of the images); images train %d, val %d, test %d, "
                "holdout %d", seed, list(chosen), float((assignment["split"] == "test").mean()),
                *(int((assignment["split"] == s).sum()) for s in (*SPLITS, HOLDOUT)))
    return Partition(assignment=assignment, test_clusters=chosen, seed=seed)


def partition_with(frame: pd.DataFrame, config: PartitionConfig) -> Partition:
    """:func:`partition_by_clusters` with every setting of ``config`` (the pipeline's one call)."""
    return partition_by_clusters(frame, test_clusters=config.test_clusters, test_cluster_ids=config.test_cluster_ids,
                                 test_share=config.test_share, origins=config.origins,
                                 val_fraction=config.val_fraction, seed=config.seed,
                                 holdout_fraction=config.holdout_fraction)


def check_inputs(frame: pd.DataFrame, test_clusters: int, test_cluster_ids: Sequence[int], test_share: float,
                 val_fraction: float, classes: Sequence[str]) -> None:
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
    clusters = sorted(int(c) for c in frame["cluster"].unique())
    if test_cluster_ids:
        strange = sorted(set(test_cluster_ids) - set(clusters))
        if strange or len(set(test_cluster_ids)) >= len(clusters):
            raise PartitionError(f"test_cluster_ids={list(test_cluster_ids)} must be distinct clusters of the frame, "
                                 f"leaving one for training ({'not clusters: ' + str(strange) if strange else 'all'})")
        if test_share:
            raise PartitionError("give test_cluster_ids or test_share, not both")
    elif not (0 if test_share else 1) <= test_clusters < len(clusters):
        raise PartitionError(f"test_clusters={test_clusters} must be in [1, {len(clusters) - 1}] "
                             f"({len(clusters)} clusters in the frame; 0, any count, only with test_share)")
    if not 0.0 <= test_share < 1.0:
        raise PartitionError(f"test_share={test_share} must be in (0, 1), or 0 for none")
    if not 0.0 < val_fraction < 1.0:
        raise PartitionError(f"val_fraction={val_fraction} must be in (0, 1)")


def of_origins(frame: pd.DataFrame, origins: Sequence[str]) -> pd.DataFrame:
    """The rows of ``origins`` (all rows when empty); PartitionError when none is left."""
    if not origins:
        return frame
    kept = frame[frame["origin"].isin(list(origins))]
    if kept.empty:
        raise PartitionError(f"no image of origin(s) {', '.join(origins)} among the clustered images "
                             f"(origins present: {', '.join(sorted(map(str, frame['origin'].unique())))})")
    logger.info("partition: %d of %d clustered images are of origins %s; the rest stay out of every split",
                len(kept), len(frame), list(origins))
    return kept


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


class ClusterCover:
    """What any choice of test clusters does to the lesions, scored for many choices in one matrix product.

    Lesions with the same label and the same set of clusters behave alike, so
    they are kept as one row (a few hundred rows for ISIC, not 20,000 lesions).
    A choice is a boolean row over ``cluster_ids``.
    """

    def __init__(self, lesions: pd.DataFrame, classes: Sequence[str]) -> None:
        self.cluster_ids = np.array(sorted(set().union(*lesions["clusters"])))
        self.classes = list(classes)
        kinds = lesions.groupby(["clusters", "label"], sort=False)["images"].agg(["size", "sum"]).reset_index()
        self.member = np.array([np.isin(self.cluster_ids, list(cs)) for cs in kinds["clusters"]])  # kinds × K
        self.images = kinds["sum"].to_numpy(float)
        # lesions per (kind, class): a kind's lesions all count for its label
        self.lesions = (kinds["label"].to_numpy()[:, None] == np.array(self.classes)[None, :]) * \
            kinds["size"].to_numpy()[:, None]

    def choice(self, ids: Sequence[int]) -> np.ndarray:
        return np.isin(self.cluster_ids, list(ids))

    def ids(self, choice: np.ndarray) -> tuple[int, ...]:
        return tuple(int(c) for c in self.cluster_ids[choice])

    def score(self, choices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Per choice (rows of ``choices``): the share of images in test, and which classes end short."""
        test = (self.member.astype(np.int64) @ choices.T.astype(np.int64)) > 0  # kinds × choices
        shares = self.images @ test / self.images.sum()
        short = (self.lesions.T @ ~test < MIN_LESIONS_OUTSIDE).T  # choices × classes
        return shares, short

    def short_names(self, choice: np.ndarray) -> list[str]:
        """Classes with fewer than ``MIN_LESIONS_OUTSIDE`` lesions outside test, in class order."""
        return [c for c, s in zip(self.classes, self.score(choice[None])[1][0]) if s]

    def require(self, choice: np.ndarray) -> tuple[int, ...]:
        """The ids of ``choice``, or PartitionError naming the classes it leaves short."""
        short = self.short_names(choice)
        if short:
            raise PartitionError(f"test clusters {list(self.ids(choice))} leave class(es) {', '.join(short)} fewer "
                                 f"than {MIN_LESIONS_OUTSIDE} lesions outside test, so they cannot be in both "
                                 "train and validation")
        return self.ids(choice)


def draw_test_clusters(cover: ClusterCover, k: int, rng: np.random.Generator, max_draws: int) -> tuple[int, ...]:
    """Draw ``k`` clusters until every class keeps ``MIN_LESIONS_OUTSIDE`` lesions outside test."""
    best: list[str] | None = None
    for _ in range(max_draws):
        choice = cover.choice(rng.choice(cover.cluster_ids, size=k, replace=False))
        short = cover.short_names(choice)
        if not short:
            return cover.ids(choice)
        best = short if best is None or len(short) < len(best) else best
    raise PartitionError(f"class(es) {', '.join(best or [])} keep fewer than {MIN_LESIONS_OUTSIDE} lesions "
                         f"outside the test clusters in all {max_draws} draws of {k} test clusters, so they "
                         f"cannot be in both train and validation")


def aim_at_share(cover: ClusterCover, k: int, share: float, rng: np.random.Generator,
                 max_draws: int) -> tuple[int, ...]:
    """``k`` test clusters (any number when 0) whose test set is nearest ``share`` of the images.

    The nearest of ``max_draws`` seeded draws that keeps every class in train
    and validation, then the best neighbour (one cluster swapped, or for a free
    count also one added or removed) while it comes nearer.
    """
    n = len(cover.cluster_ids)
    sizes = np.full(max_draws, k) if k else rng.integers(1, n, max_draws)
    ranks = rng.random((max_draws, n)).argsort(axis=1).argsort(axis=1)  # a random order of the clusters per draw
    found = _nearest(cover, ranks < sizes[:, None], share)
    if found is None:
        raise PartitionError(f"no draw of {k or 'any number of'} test clusters in {max_draws} keeps every class "
                             f"with {MIN_LESIONS_OUTSIDE} lesions outside test")
    current, gap = found
    while (step := _nearest(cover, _neighbours(current, free_count=not k), share)) is not None and step[1] < gap:
        current, gap = step
    return cover.ids(current)


def _nearest(cover: ClusterCover, choices: np.ndarray, share: float) -> tuple[np.ndarray, float] | None:
    """The first of the feasible ``choices`` whose test share is nearest ``share``, with its distance; or None."""
    if not len(choices):
        return None
    shares, short = cover.score(choices)
    gaps = np.where(short.any(axis=1), np.inf, np.abs(shares - share))
    best = int(np.argmin(gaps))
    return None if np.isinf(gaps[best]) else (choices[best], float(gaps[best]))


def _neighbours(choice: np.ndarray, free_count: bool) -> np.ndarray:
    """Every choice one swap away (one cluster in, one out); with ``free_count`` also one flip away."""
    inside, outside = np.flatnonzero(choice), np.flatnonzero(~choice)
    rows = []
    for a in inside:
        for b in outside:
            row = choice.copy()
            row[[a, b]] = False, True
            rows.append(row)
    if free_count:
        for c in range(len(choice)):
            row = choice.copy()
            row[c] = not row[c]
            if 0 < row.sum() < len(row):
                rows.append(row)
    return np.array(rows, dtype=bool).reshape(-1, len(choice))


def is_test(lesions: pd.DataFrame, test_clusters: Sequence[int]) -> pd.Series:
    """Lesions with any image in a test cluster."""
    held = frozenset(test_clusters)
    return lesions["clusters"].map(lambda cs: not cs.isdisjoint(held))


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
