"""A lesion-grouped hold-out that no model can move: the same lesions for every teacher, trial and seed.

Used where a split must not depend on the teacher's clusters: the teacher's
k-NN quality (train features → held-out features, salt ``holdout``) and the
ranking of Tune trials whose teachers, and so whose cluster partitions, differ
(salt ``rank``, reserved by the partition before its cluster split).  A lesion
is held out when a stable hash of ``salt:lesion_id`` falls below ``fraction``,
so all images of a lesion fall on one side, whatever the order or the subset of
images, and no random state is involved.  Given the labels, each class can keep
a few of its lesions out of the hold-out (those with the largest hashes), so a
rare class still reaches the training split.
"""

from __future__ import annotations

import hashlib
from typing import Iterable, Sequence

import numpy as np
import pandas as pd

RANK_SALT = "rank"  # the hold-out that ranks Tune trials (apart from the teacher's k-NN one)


def _unit(salt: str, lesion: str) -> float:
    """A stable number in [0, 1) for one lesion."""
    return int.from_bytes(hashlib.sha256(f"{salt}:{lesion}".encode()).digest()[:8], "big") / 2**64


def lesion_classes(lesion_ids: Sequence, labels: Sequence[str]) -> pd.Series:
    """Each lesion's class: its images' majority label (``mode`` sorts ties alphabetically: deterministic)."""
    return pd.Series(list(labels), index=list(lesion_ids)).groupby(level=0).agg(lambda s: s.mode().iloc[0])


def lesion_holdout(lesion_ids: Iterable[str], fraction: float, salt: str = "holdout",
                   labels: Sequence[str] | None = None, keep: int = 0) -> np.ndarray:
    """Boolean mask: True for the images whose lesion is held out (about ``fraction`` of the lesions).

    With ``labels`` (one per image; a lesion's class is its majority label),
    every class keeps at least ``keep`` of its lesions outside the hold-out.
    """
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"holdout fraction must be in (0, 1), got {fraction}")
    lesions = [str(lesion) for lesion in lesion_ids]
    score = {lesion: _unit(salt, lesion) for lesion in set(lesions)}
    held = {lesion: value < fraction for lesion, value in score.items()}
    if labels is not None and keep > 0:
        classes = lesion_classes(lesions, labels)
        for _, members in classes.groupby(classes):
            chosen = sorted((lesion for lesion in members.index if held[lesion]), key=score.get)
            for lesion in chosen[max(0, len(members) - keep):]:
                held[lesion] = False
    return np.array([held[lesion] for lesion in lesions], dtype=bool)
