"""DeepCluster with the Multi-Similarity loss: features → k-means pseudo-labels → one epoch of training.

Caron et al., "Deep Clustering for Unsupervised Learning of Visual Features",
ECCV 2018, with the cross-entropy on pseudo-labels replaced by the MS loss
(Wang et al., CVPR 2019) as in the reproduced paper.  These functions run in one
process or inside a DDP worker; the collectives live in ``skin_core.distributed``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable

import numpy as np
import torch
from torch import nn

from skin_core.clustering import (KMeansResult, UniformClusterSampler, cluster_nmi, cluster_purity, kmeans,
                                  pca_whiten)
from skin_core.metrics.knn import knn_scores
from skin_core.data.transforms import random_flips, to_input
from skin_core.distributed import broadcast_from_root, gather_to_root, world
from skin_core.training.steps import autocast, average, backward_step


@dataclass(frozen=True)
class ClusterRound:
    """One epoch's clustering of the whole training set, in global order (rank 0's rows first)."""

    image_ids: np.ndarray
    assignments: np.ndarray
    distances: np.ndarray
    sizes: np.ndarray
    offset: int  # where this rank's rows start
    count: int  # how many rows this rank holds
    quality: dict[str, float] = field(default_factory=dict)  # feature_quality, where labels were given

    def local(self) -> np.ndarray:
        return self.assignments[self.offset:self.offset + self.count]




@torch.no_grad()
def extract_features(model: nn.Module, images: torch.Tensor, batch_size: int, device: torch.device,
                     amp: bool = False) -> np.ndarray:
    """Global-pooled features (N×C float32) of uint8 N×H×W×3 ``images``, in eval mode."""
    model.eval()
    chunks = []
    for start in range(0, len(images), batch_size):
        with autocast(device, amp):
            chunks.append(model(to_input(images[start:start + batch_size], device))["pooled"].float().cpu())
    return torch.cat(chunks).numpy() if chunks else np.zeros((0, 0), np.float32)


def cluster_features(features: np.ndarray, k: int, pca_dim: int, seed: int) -> KMeansResult:
    """DeepCluster's recipe: PCA-whiten, L2-normalise, k-means with this epoch's seed."""
    return kmeans(pca_whiten(features, pca_dim), k, seed=seed)


def feature_quality(features: np.ndarray, labels: np.ndarray, heldout: np.ndarray, assignments: np.ndarray,
                    k: int = 20) -> dict[str, float]:
    """How much the features know about the diagnosis (labels evaluate; they never train the teacher).

    k-NN (cosine, ``k``) from the images of the other lesions to those of the
    held-out lesions, the usual evaluation of self-supervised features; and the
    purity and NMI of the clusters against the labels.
    """
    quality = {"purity": cluster_purity(assignments, labels), "nmi_label": cluster_nmi(assignments, labels)}
    if heldout.any() and (~heldout).any():
        knn = knn_scores(features[~heldout], labels[~heldout], features[heldout], labels[heldout], k=k)
        quality |= {"knn_accuracy": knn.accuracy, "knn_balanced_accuracy": knn.balanced_accuracy}
    return quality


def cluster_globally(image_ids: np.ndarray, features: np.ndarray, k: int, pca_dim: int, seed: int,
                     labels: np.ndarray | None = None, heldout: np.ndarray | None = None) -> ClusterRound:
    """Gather every rank's features on rank 0, cluster there (and measure them against ``labels``), share back."""
    parts = gather_to_root((image_ids, features, labels, heldout))
    result = None
    if parts is not None:
        ids, feats = np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])
        found = cluster_features(feats, k, pca_dim, seed)
        quality = {} if labels is None else feature_quality(
            feats, np.concatenate([p[2] for p in parts]), np.concatenate([p[3] for p in parts]), found.assignments)
        result = (ids, found.assignments, found.distances, found.sizes, [len(p[0]) for p in parts], quality)
    ids, assignments, distances, sizes, counts, quality = broadcast_from_root(result)
    rank = world()[0]
    return ClusterRound(ids, assignments, distances, sizes, offset=int(sum(counts[:rank])), count=counts[rank],
                        quality=quality)




def teacher_step(model: nn.Module, x: torch.Tensor, labels: torch.Tensor, criterion: nn.Module,
                 optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler | None = None,
                 amp: bool = False) -> dict[str, float]:
    """One MS-loss step on pseudo-labels; returns the loss and mined-pair counts."""
    optimizer.zero_grad(set_to_none=True)
    with autocast(x.device, amp):
        embeddings = model(x)["embedding"]
    loss, stats = criterion(embeddings.float(), labels)  # raises FloatingPointError when not finite
    backward_step(loss, optimizer, scaler)
    return stats




def train_epoch(model: nn.Module, images: torch.Tensor, pseudo_labels: np.ndarray, *, criterion: nn.Module,
                optimizer: torch.optim.Optimizer, batch_size: int, steps: int, seed: int, epoch: int,
                device: torch.device, amp: bool = False, scaler: torch.amp.GradScaler | None = None
                ) -> dict[str, float]:
    """``steps`` batches drawn uniformly over this rank's clusters; averaged step stats."""
    model.train()
    sampler = UniformClusterSampler(pseudo_labels, num_samples=steps * batch_size, seed=seed)
    sampler.set_epoch(epoch)
    order = torch.as_tensor(list(sampler))
    generator = torch.Generator().manual_seed(seed * 100_003 + epoch)
    labels = torch.as_tensor(pseudo_labels)

    def batches() -> Iterable[dict[str, float]]:
        for start in range(0, steps * batch_size, batch_size):
            idx = order[start:start + batch_size]
            x = random_flips(to_input(images[idx], device), generator)
            yield teacher_step(model, x, labels[idx].to(device), criterion, optimizer, scaler, amp)

    return average(batches())
