"""Multi-Similarity loss with its pair miner: the metric teacher's criterion on k-means pseudo-labels.

Wang et al., "Multi-Similarity Loss with General Pair Weighting for Deep Metric
Learning", CVPR 2019.  With cosine similarities ``S`` over a batch of ``m``
embeddings and ``P_i`` / ``N_i`` the mined positives / negatives of anchor ``i``::

    L = 1/m Σ_i { 1/α log[1 + Σ_{k∈P_i} exp(−α (S_ik − λ))]
                + 1/β log[1 + Σ_{k∈N_i} exp( β (S_ik − λ))] }

Mining (the paper's pair selection, ``MultiSimilarityMiner``), per anchor ``i``:

* a negative ``k`` is kept if ``S_ik + ε > min_{j ∈ positives(i)} S_ij``;
* a positive ``j`` is kept if ``S_ij − ε < max_{k ∈ negatives(i)} S_ik``;

where positives/negatives are all same/different-label items of the batch, self
excluded.  An anchor keeps either both kinds of pair or none (one implies the
other through the two inequalities), and an anchor with no positive or no
negative in the batch keeps nothing.

Defaults: ``alpha=2, beta=50, base(λ)=1.0, epsilon=0.1``, the MS paper's values;
pytorch-metric-learning (PML) defaults ``base`` to 0.5, so it is always passed.

Averaging, read in PML 2.9 (``MultiSimilarityLoss`` → ``MeanReducer``): the loss
is one element per row of the similarity matrix, so the mean runs over *all* ``m``
anchors of the batch; anchors without a mined pair contribute 0 but still count
in ``m`` (not an average over anchors with a valid pair), as in the MS paper's
own code, which divides by the batch size.  PML also returns exactly 0 when every
mined index tensor has at most one entry (e.g. one positive and one negative pair).
"""

from __future__ import annotations

import logging
import math

import torch
from pytorch_metric_learning import losses, miners
from pytorch_metric_learning.utils import distributed as pml_dist
from torch import nn

from skin_core.distributed import world

logger = logging.getLogger(__name__)

Stats = dict[str, float]


class MultiSimilarityCriterion(nn.Module):
    """MS loss on MS-mined pairs; with ``distributed`` it mines and averages over the global batch.

    ``forward(embeddings, labels)`` returns ``(loss, stats)``.  In one process the
    loss is the formula in the module docstring.  With ``distributed=True`` and a
    process group of world size ``W > 1``, PML's ``DistributedMinerWrapper`` and
    ``DistributedLossWrapper`` (``efficient=False``) gather embeddings and labels
    from all workers: every worker mines and computes the loss over the whole
    global batch (all anchors), and returns ``W ×`` that value.  The gather carries
    no gradient, so each worker's gradient reaches only its own rows; DDP's
    gradient averaging (÷W) then yields exactly the gradient of the global-batch
    loss.  ``stats["loss"]`` is always the global-batch value (loss ÷ W), equal to
    the single-process loss on the concatenated batch.  ``efficient=True`` is not
    used: it keeps only local anchors, dropping the gradient that flows to local
    rows from remote anchors.
    """

    def __init__(self, alpha: float = 2.0, beta: float = 50.0, base: float = 1.0,
                 epsilon: float = 0.1, distributed: bool = False) -> None:
        super().__init__()
        self.loss_fn = losses.MultiSimilarityLoss(alpha=alpha, beta=beta, base=base)
        self.miner = miners.MultiSimilarityMiner(epsilon=epsilon)
        self.distributed = distributed
        # Built eagerly but chosen per call: the process group may be created after this module.
        self.dist_loss = pml_dist.DistributedLossWrapper(self.loss_fn, efficient=False)
        self.dist_miner = pml_dist.DistributedMinerWrapper(self.miner, efficient=False)

    def world_size(self) -> int:
        """Workers whose batches this criterion combines (1 unless distributed and initialised)."""
        return world()[1] if self.distributed else 1

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, Stats]:
        """Mine pairs and compute the loss; ``FloatingPointError`` on a non-finite loss or embedding."""
        world = self.world_size()
        loss_fn, miner = (self.dist_loss, self.dist_miner) if world > 1 else (self.loss_fn, self.miner)
        indices = miner(embeddings, labels)
        loss = loss_fn(embeddings, labels, indices)
        value = float(loss.detach()) / world
        check_finite(value, embeddings)
        return loss, pair_stats(indices, value, world)


def check_finite(loss_value: float, embeddings: torch.Tensor) -> None:
    """Raise ``FloatingPointError`` on a non-finite loss or embedding.

    Embeddings are checked too because the miner's comparisons are False for NaN:
    a NaN row is silently left out of every pair and the loss stays finite.
    """
    bad_rows = int((~torch.isfinite(embeddings.detach())).any(dim=1).sum())
    if bad_rows or not math.isfinite(loss_value):
        raise FloatingPointError(f"Multi-Similarity loss is not finite (loss {loss_value}, {bad_rows} "
                                 f"non-finite embedding rows): diverged training or a bad input batch")


def pair_stats(indices: tuple[torch.Tensor, ...], loss_value: float, world: int) -> Stats:
    """Counts of mined pairs (over the global batch when distributed) and the global-batch loss."""
    a1, _, a2, _ = indices
    anchors = torch.unique(torch.cat([a1, a2])).numel()
    return {"loss": loss_value, "pos_pairs": float(a1.numel()), "neg_pairs": float(a2.numel()),
            "anchors_with_pairs": float(anchors), "world_size": float(world)}
