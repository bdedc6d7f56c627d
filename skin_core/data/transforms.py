"""Image tensors for the networks: uint8 NHWC batches in, normalised float NCHW out."""

from __future__ import annotations

import torch

from skin_core.config import AugmentConfig
from skin_core.data.augment import augment_batch

# ImageNet statistics: torchvision's pretrained ResNets expect them, and they are harmless from scratch.
MEAN = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
STD = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
FLIPS_ONLY = AugmentConfig()  # the defaults: flips and turns, nothing else


def to_unit(images: torch.Tensor, device: torch.device | str = "cpu") -> torch.Tensor:
    """uint8 N×H×W×3 → float N×3×H×W in [0, 1] on ``device`` (what augmentation works on)."""
    return images.to(device, non_blocking=True).permute(0, 3, 1, 2).float().div_(255.0)


def normalize(x: torch.Tensor) -> torch.Tensor:
    """[0, 1] images → the network's input scale (ImageNet mean and standard deviation)."""
    return (x - MEAN.to(x.device)) / STD.to(x.device)


def to_input(images: torch.Tensor, device: torch.device | str = "cpu") -> torch.Tensor:
    """uint8 N×H×W×3 → float N×3×H×W, scaled and normalised, on ``device``."""
    return normalize(to_unit(images, device))


def random_flips(x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Random horizontal/vertical flips and 90° turns (square images) per image: a lesion has no canonical
    orientation. Index ops only, so ``x`` may already be normalised; see :func:`augment_batch`."""
    return augment_batch(x, FLIPS_ONLY, generator)
