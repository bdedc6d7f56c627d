"""Image tensors for the networks: uint8 NHWC batches in, normalised float NCHW out."""

from __future__ import annotations

import cv2
import numpy as np
import torch

# ImageNet statistics: torchvision's pretrained ResNets expect them, and they are harmless from scratch.
MEAN = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
STD = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)


def decode_pngs(encoded: list[bytes] | np.ndarray) -> np.ndarray:
    """PNG/JPEG byte strings (as stored in the shards) → uint8 RGB array N×H×W×3 (equal sizes)."""
    images = [cv2.cvtColor(cv2.imdecode(np.frombuffer(b, np.uint8), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
              for b in encoded]
    return np.stack(images) if images else np.zeros((0, 0, 0, 3), np.uint8)


def to_input(images: torch.Tensor, device: torch.device | str = "cpu") -> torch.Tensor:
    """uint8 N×H×W×3 → float N×3×H×W, scaled and normalised, on ``device``."""
    x = images.to(device, non_blocking=True).permute(0, 3, 1, 2).float().div_(255.0)
    return (x - MEAN.to(x.device)) / STD.to(x.device)


def random_flips(x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Random horizontal/vertical flips and 90° turns per image: a lesion has no canonical orientation."""
    flips = torch.randint(0, 2, (x.shape[0], 3), generator=generator).tolist()
    square = x.shape[-1] == x.shape[-2]
    out = []
    for img, (h, v, t) in zip(x, flips):
        img = img.flip(-1) if h else img
        img = img.flip(-2) if v else img
        out.append(img.transpose(-1, -2) if t and square else img)
    return torch.stack(out)
