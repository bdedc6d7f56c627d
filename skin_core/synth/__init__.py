"""Synthetic dermoscopy images in the ISIC 2019 layout: the embedded default dataset for demos and tests."""

from skin_core.synth.dataset import SynthReport, generate_dataset, plan_dataset

__all__ = ["SynthReport", "generate_dataset", "plan_dataset"]
