"""Self-contained HTML reports."""

from .html import Section, render_report

__all__ = ["Section", "render_report"]
