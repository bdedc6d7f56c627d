"""How far clusters follow known factors (class, origin/border, hair, ruler, lighting): NMI per factor."""

from __future__ import annotations

import pandas as pd

from skin_core.clustering.kmeans import cluster_nmi

FACTORS: tuple[str, ...] = ("label", "origin", "border", "hair", "ruler", "marker", "lighting", "skin_tone")


def factor_nmi(assignments: pd.DataFrame, factors: pd.DataFrame) -> dict[str, float]:
    """NMI between ``assignments.cluster`` and each factor column present in ``factors`` (joined on image id)."""
    joined = assignments[["image_id", "cluster"]].merge(factors.rename(columns={"image": "image_id"}), on="image_id")
    return {name: round(cluster_nmi(joined["cluster"].to_numpy(), joined[name].astype(str).to_numpy()), 4)
            for name in FACTORS if name in joined.columns}
