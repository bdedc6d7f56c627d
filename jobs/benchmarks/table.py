"""The rows every benchmark returns, and the one way they are printed.

A row is a dict with the keys in ``COLUMNS``; ``ratio`` is the value divided by
the value of its benchmark's baseline measured in the same run (the baseline's
own row reads 1.00), empty where a figure has no baseline.

    from benchmarks.table import print_rows, row  # or `from table import ...` beside it
"""

from __future__ import annotations

import pandas as pd

COLUMNS = ("benchmark", "measurement", "value", "unit", "ratio")


def row(benchmark: str, measurement: str, value: float, unit: str, baseline: float | None = None) -> dict:
    """One measurement; ``baseline`` (same unit) gives its ratio."""
    ratio = None if baseline is None else value / baseline
    return {"benchmark": benchmark, "measurement": measurement, "value": value, "unit": unit, "ratio": ratio}


def print_rows(rows: list[dict]) -> None:
    """The rows as one table: text left-aligned, values to 3 decimals below 10, ratios as 1.23×."""
    frame = pd.DataFrame(rows, columns=list(COLUMNS))
    frame["value"] = frame["value"].map(lambda v: f"{v:.3f}" if abs(v) < 10 else f"{v:.1f}")
    frame["ratio"] = frame["ratio"].map(lambda r: "" if pd.isna(r) else f"{r:.2f}×")
    left = {column: f"{{:<{frame[column].str.len().max()}}}".format for column in ("benchmark", "measurement", "unit")}
    print(frame.to_string(index=False, formatters=left, justify="left"))
