"""Counts that describe a manifest: per class, per origin, class × origin, lesion groups, rejects."""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass

import pandas as pd

from skin_core.classes import CLASSES, ORIGINS
from skin_core.data.isic import Manifest


@dataclass(frozen=True)
class DatasetSummary:
    root: str
    images: int
    per_class: dict[str, int]
    per_origin: dict[str, int]
    class_by_origin: dict[str, dict[str, int]]  # class → origin → count
    lesion_groups: int
    multi_image_lesions: int
    rejects: dict[str, int]  # reason → count
    unk_dropped: int

    def to_dict(self) -> dict:
        return asdict(self)


def summarize(manifest: Manifest) -> DatasetSummary:
    frame = manifest.frame
    table = pd.crosstab(pd.Categorical(frame["label"], CLASSES), pd.Categorical(frame["origin"], ORIGINS),
                        dropna=False)
    group_sizes = frame.groupby("lesion_id").size()
    return DatasetSummary(
        root=manifest.root,
        images=len(frame),
        per_class={c: int(table.loc[c].sum()) for c in CLASSES},
        per_origin={o: int(table[o].sum()) for o in ORIGINS},
        class_by_origin={c: {o: int(table.at[c, o]) for o in ORIGINS} for c in CLASSES},
        lesion_groups=int(len(group_sizes)),
        multi_image_lesions=int((group_sizes > 1).sum()),
        rejects=dict(Counter(r.reason for r in manifest.rejects)),
        unk_dropped=manifest.unk_dropped,
    )


def format_table(rows: dict[str, dict[str, int]], columns: tuple[str, ...], corner: str = "") -> str:
    """Plain-text table with right-aligned counts and a total column."""
    header = [corner, *columns, "total"]
    body = [[name, *(f"{r[c]:,}" for c in columns), f"{sum(r.values()):,}"] for name, r in rows.items()]
    widths = [max(len(row[i]) for row in [header, *body]) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(w) if i == 0 else cell.rjust(w) for i, (cell, w) in enumerate(zip(row, widths)))
             for row in [header, *body]]
    return "\n".join(lines)


def format_summary(summary: DatasetSummary) -> str:
    """The human-readable report printed by ``skin info``."""
    rejects = ", ".join(f"{reason}: {n:,}" for reason, n in sorted(summary.rejects.items())) or "none"
    return "\n".join([
        f"dataset      {summary.root}",
        f"images       {summary.images:,}",
        f"lesions      {summary.lesion_groups:,} groups ({summary.multi_image_lesions:,} with several images)",
        f"UNK dropped  {summary.unk_dropped:,}",
        f"rejects      {sum(summary.rejects.values()):,} ({rejects})",
        "",
        format_table({"images": summary.per_class}, CLASSES, "per class"),
        "",
        format_table({"images": summary.per_origin}, ORIGINS, "per origin"),
        "",
        format_table(summary.class_by_origin, ORIGINS, "class × origin"),
    ])
