"""Sets of ResNet stages to transfer attention from: one parsed type for ``baseline`` and ``layer3+layer4``."""

from __future__ import annotations

import itertools
from dataclasses import dataclass

LAYERS: tuple[str, ...] = ("layer1", "layer2", "layer3", "layer4")
BASELINE = "baseline"


@dataclass(frozen=True)
class LayerSet:
    """The transfer layers of a student variant, in ResNet order; empty for the baseline."""

    layers: tuple[str, ...] = ()

    @staticmethod
    def parse(variant: str) -> "LayerSet":
        """``baseline`` → no layers; ``layer4+layer3`` → (layer3, layer4).  ValueError on anything else."""
        if variant == BASELINE:
            return LayerSet()
        parts = variant.split("+")
        if set(parts) - set(LAYERS) or len(set(parts)) != len(parts):
            raise ValueError(f"{variant!r} is neither {BASELINE!r} nor layers from {', '.join(LAYERS)} "
                             "joined by '+', each at most once")
        return LayerSet(tuple(layer for layer in LAYERS if layer in parts))

    @property
    def is_baseline(self) -> bool:
        return not self.layers

    @property
    def name(self) -> str:
        """The variant string: ``baseline`` or ``layer3+layer4``."""
        return "+".join(self.layers) or BASELINE

    @property
    def display_name(self) -> str:
        """The model's name in tables and figures: ``baseline`` or ``AT layer3+layer4``."""
        return BASELINE if self.is_baseline else f"AT {self.name}"


def all_layer_sets() -> list[str]:
    """The 15 non-empty subsets of layer1..layer4, as variants (``layer2+layer4``)."""
    return ["+".join(c) for n in range(1, len(LAYERS) + 1) for c in itertools.combinations(LAYERS, n)]
