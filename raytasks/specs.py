"""What a training stage's workers are given: plain frozen dataclasses, in a module that imports no framework.

Ray Train's controller unpickles ``train_loop_config`` (these specs) when a fit
starts; defined beside the stages, they made it import torch, torchvision,
scikit-learn and MLflow before it could start a worker.  Here they cost it
nothing to load.
"""

from __future__ import annotations

from dataclasses import dataclass

from skin_core.config import AugmentConfig, ModelConfig, StudentConfig, TeacherConfig
from skin_core.layers import LayerSet


@dataclass(frozen=True)
class TeacherSpec:
    """What each teacher worker needs."""

    model: ModelConfig
    teacher: TeacherConfig
    seed: int
    amp: bool
    threads: int
    batch_size: int  # per worker: the global batch split over the workers


@dataclass(frozen=True)
class StudentSpec:
    """What each worker needs to train one variant."""

    model: ModelConfig
    student: StudentConfig
    augment: AugmentConfig
    variant: str
    teacher_weights: str  # "" for the baseline
    class_weights: tuple[float, ...]
    seed: int
    amp: bool
    threads: int
    batch_size: int  # per worker: the global batch split over the workers
    final_dir: str  # where rank 0 writes the variant's weights and history when it ends

    @property
    def layers(self) -> tuple[str, ...]:
        return LayerSet.parse(self.variant).layers

    @property
    def beta(self) -> float:
        return 0.0 if LayerSet.parse(self.variant).is_baseline else self.student.at_beta
