"""The Multi-Similarity criterion against a hand computation, and its 2-worker (gloo) path."""

from __future__ import annotations

import datetime
import math
import os
import socket
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from skin_core.losses.multi_similarity import MultiSimilarityCriterion

ALPHA, BETA, EPSILON = 2.0, 50.0, 0.1


def hand_ms(emb: np.ndarray, labels: list[int], lam: float) -> tuple[float, int, int]:
    """The MS paper's loss and mining rule in plain loops: (loss, kept positives, kept negatives)."""
    unit = emb / np.linalg.norm(emb, axis=1, keepdims=True)
    sim = unit @ unit.T
    m = len(labels)
    total, n_pos, n_neg = 0.0, 0, 0
    for i in range(m):
        pos = [j for j in range(m) if j != i and labels[j] == labels[i]]
        neg = [k for k in range(m) if labels[k] != labels[i]]
        if not pos or not neg:
            continue
        kept_pos = [j for j in pos if sim[i, j] - EPSILON < max(sim[i, k] for k in neg)]
        kept_neg = [k for k in neg if sim[i, k] + EPSILON > min(sim[i, j] for j in pos)]
        n_pos, n_neg = n_pos + len(kept_pos), n_neg + len(kept_neg)
        if kept_pos:
            total += 1 / ALPHA * math.log(1 + sum(math.exp(-ALPHA * (sim[i, j] - lam)) for j in kept_pos))
        if kept_neg:
            total += 1 / BETA * math.log(1 + sum(math.exp(BETA * (sim[i, k] - lam)) for k in kept_neg))
    return total / m, n_pos, n_neg  # averaged over all m anchors, as PML's MeanReducer does


def six_points() -> tuple[np.ndarray, list[int]]:
    """Six vectors in 3 classes, placed so mining keeps some pairs and drops others."""
    angles = np.deg2rad([0, 40, 75, 55, 100, 160])
    emb = np.stack([np.cos(angles), np.sin(angles), np.full(6, 0.2)], axis=1)
    return emb, [0, 0, 1, 1, 2, 2]


@pytest.mark.parametrize("lam", [1.0, 0.5])
def test_loss_and_pair_counts_match_hand_computation(lam: float) -> None:
    emb, labels = six_points()
    expected, n_pos, n_neg = hand_ms(emb, labels, lam)
    assert 0 < n_pos < 6 and 0 < n_neg < 24  # the mining rule really filters
    criterion = MultiSimilarityCriterion(alpha=ALPHA, beta=BETA, base=lam, epsilon=EPSILON)
    loss, stats = criterion(torch.tensor(emb), torch.tensor(labels))
    assert loss.item() == pytest.approx(expected, rel=1e-9)
    assert stats["loss"] == pytest.approx(expected, rel=1e-9)
    assert (stats["pos_pairs"], stats["neg_pairs"]) == (n_pos, n_neg)
    assert stats["world_size"] == 1
    # Only 4 of 6 anchors keep pairs, yet the hand loss divides by 6: PML averages over all anchors.
    assert stats["anchors_with_pairs"] == 4


def test_loss_is_differentiable_and_float32_agrees() -> None:
    emb, labels = six_points()
    expected, _, _ = hand_ms(emb, labels, 1.0)
    x = torch.tensor(emb, dtype=torch.float32, requires_grad=True)
    loss, _ = MultiSimilarityCriterion()(x, torch.tensor(labels))
    loss.backward()
    assert loss.item() == pytest.approx(expected, abs=1e-5)
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


@pytest.mark.parametrize("bad", ["nan_embedding", "inf_embedding", "inf_base"])
def test_non_finite_loss_or_embedding_raises(bad: str) -> None:
    # A NaN row drops out of every mined pair (comparisons are False), so the loss alone would stay finite.
    emb, labels = six_points()
    emb[0, 0] = {"nan_embedding": np.nan, "inf_embedding": np.inf}.get(bad, emb[0, 0])
    criterion = MultiSimilarityCriterion(base=math.inf if bad == "inf_base" else 1.0)
    with pytest.raises(FloatingPointError, match="not finite"):
        criterion(torch.tensor(emb), torch.tensor(labels))


def test_distributed_flag_without_process_group_is_single_process() -> None:
    emb, labels = six_points()
    plain, _ = MultiSimilarityCriterion()(torch.tensor(emb), torch.tensor(labels))
    flagged, stats = MultiSimilarityCriterion(distributed=True)(torch.tensor(emb), torch.tensor(labels))
    assert flagged.item() == plain.item() and stats["world_size"] == 1


def global_batch() -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    return torch.randn(32, 8, generator=gen, dtype=torch.float64), torch.randint(0, 4, (32,), generator=gen)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _worker(rank: int, world: int, port: int, out_dir: str) -> None:
    """One gloo worker: half of the global batch, loss and gradient of its own rows saved to disk."""
    os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")  # loopback only, whatever the host's interfaces
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world,
                            timeout=datetime.timedelta(seconds=30))
    try:
        emb, labels = global_batch()
        rows = slice(rank * 16, (rank + 1) * 16)
        local = emb[rows].clone().requires_grad_(True)
        loss, stats = MultiSimilarityCriterion(distributed=True)(local, labels[rows])
        loss.backward()
        torch.save({"loss": loss.item(), "stats": stats, "grad": local.grad}, Path(out_dir) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


@pytest.mark.timeout(120)
def test_two_gloo_workers_equal_one_worker_on_the_global_batch(tmp_path: Path) -> None:
    emb, labels = global_batch()
    full = emb.clone().requires_grad_(True)
    expected, expected_stats = MultiSimilarityCriterion()(full, labels)
    expected.backward()
    mp.spawn(_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    for rank in range(2):
        got = torch.load(tmp_path / f"rank{rank}.pt")
        # PML's wrapper returns world_size × the global-batch loss so that DDP's gradient mean is exact.
        assert got["loss"] == pytest.approx(2 * expected.item(), abs=2e-5)
        assert got["stats"]["loss"] == pytest.approx(expected.item(), abs=1e-5)
        assert got["stats"]["pos_pairs"] == expected_stats["pos_pairs"]
        assert got["stats"]["neg_pairs"] == expected_stats["neg_pairs"]
        assert got["stats"]["world_size"] == 2
        # Each worker's gradient on its rows, divided by DDP's averaging over 2, is the full-batch gradient.
        torch.testing.assert_close(got["grad"] / 2, full.grad[rank * 16:(rank + 1) * 16], atol=1e-8, rtol=1e-6)
