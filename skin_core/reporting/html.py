"""A self-contained HTML report: tables and PNG figures inlined, no external files or scripts.

One file a user can open anywhere, mail or attach to an MLflow run.
"""

from __future__ import annotations

import base64
import html
from dataclasses import dataclass, field

import pandas as pd

STYLE = """
body { font-family: system-ui, -apple-system, Segoe UI, sans-serif; margin: 2rem auto; max-width: 1200px;
       color: #1d2330; padding: 0 1rem; }
h1 { font-size: 1.6rem; margin-bottom: .2rem; } h2 { border-bottom: 1px solid #d8dce3; padding-bottom: .3rem;
margin-top: 2.2rem; } h3 { font-size: 1.05rem; margin: 1.2rem 0 .4rem; }
.meta { color: #5b6475; font-size: .9rem; }
table { border-collapse: collapse; font-size: .85rem; margin: .4rem 0 1rem; }
th, td { border: 1px solid #d8dce3; padding: .25rem .55rem; text-align: right; }
th { background: #f2f4f7; } td:first-child, th:first-child { text-align: left; }
.figures { display: flex; flex-wrap: wrap; gap: 1rem; }
figure { margin: 0; max-width: 100%; } figure img { max-width: 100%; border: 1px solid #e4e7ec; }
figcaption { font-size: .8rem; color: #5b6475; text-align: center; }
p.note { color: #5b6475; font-size: .9rem; } .wide { overflow-x: auto; }
"""


@dataclass(frozen=True)
class Section:
    """A heading with an optional note, named tables and named PNG figures (bytes)."""

    title: str
    note: str = ""
    tables: dict[str, pd.DataFrame] = field(default_factory=dict)
    figures: dict[str, bytes] = field(default_factory=dict)
    figure_width: int = 560  # px; several per row on a wide screen


def _table(name: str, frame: pd.DataFrame) -> str:
    body = frame.to_html(float_format=lambda v: f"{v:.3f}", border=0, na_rep="–", escape=True)
    body = f'<div class="wide">{body}</div>'  # wide tables scroll instead of spilling past the page
    return f"<h3>{html.escape(name)}</h3>{body}" if name else body


def _figure(name: str, png: bytes, width: int) -> str:
    data = base64.b64encode(png).decode("ascii")
    return (f'<figure style="width:{width}px"><img alt="{html.escape(name)}" src="data:image/png;base64,{data}">'
            f"<figcaption>{html.escape(name)}</figcaption></figure>")


def _section(section: Section) -> str:
    parts = [f"<h2>{html.escape(section.title)}</h2>"]
    if section.note:
        parts.append(f'<p class="note">{html.escape(section.note)}</p>')
    parts += [_table(name, frame) for name, frame in section.tables.items()]
    if section.figures:
        figures = "".join(_figure(n, png, section.figure_width) for n, png in section.figures.items())
        parts.append(f'<div class="figures">{figures}</div>')
    return "\n".join(parts)


def render_report(title: str, subtitle: str, sections: list[Section]) -> str:
    """The whole page as one string."""
    body = "\n".join(_section(s) for s in sections)
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
            f"<style>{STYLE}</style></head><body><h1>{html.escape(title)}</h1>"
            f'<p class="meta">{html.escape(subtitle)}</p>\n{body}\n</body></html>\n')
