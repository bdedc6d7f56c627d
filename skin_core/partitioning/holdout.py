"""A lesion-grouped hold-out that no model can move: the same lesions for every teacher, trial and seed.

Used where a split must not depend on the teacher's clusters: the teacher's
k-NN quality (train features → held-out features) and the ranking of Tune
trials whose teachers, and so whose cluster partitions, differ.  A lesion is
held out when a stable hash of ``salt:lesion_id`` falls below ``fraction``, so
all images of a lesion fall on one side, whatever the order or the subset of
images, and no random state is involved.
"""

from __future__ import annotations

import hashlib
from typing import Iterable

import numpy as np


def lesion_holdout(lesion_ids: Iterable[str], fraction: float, salt: str = "holdout") -> np.ndarray:
    """Boolean mask: True for the images whose lesion is held out (about ``fraction`` of the lesions)."""
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"holdout fraction must be in (0, 1), got {fraction}")
    cache: dict[str, bool] = {}

    def held(lesion: str) -> bool:
        if lesion not in cache:
            digest = hashlib.sha256(f"{salt}:{lesion}".encode()).digest()
            cache[lesion] = int.from_bytes(digest[:8], "big") / 2**64 < fraction
        return cache[lesion]

    return np.array([held(str(lesion)) for lesion in lesion_ids], dtype=bool)
