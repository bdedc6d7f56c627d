"""Figures for reports: drawn on Agg canvases, written to files."""

from skin_core.plots.montage import class_mix, cluster_montage, montage_size

__all__ = ["class_mix", "cluster_montage", "montage_size"]
