"""Attention transfer and the student objective against hand computations."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from skin_core.losses.attention_transfer import AttentionTransferLoss, StudentObjective, attention_map


def hand_map(channels: list[list[float]]) -> list[float]:
    """Mean over channels of squares at each (flattened) position, then divided by its L2 norm."""
    q = [sum(c[i] ** 2 for c in channels) / len(channels) for i in range(len(channels[0]))]
    norm = math.sqrt(sum(v * v for v in q))
    return [v / norm for v in q]


def hand_at(student: list[list[float]], teacher: list[list[float]]) -> float:
    """Reference ``at_loss`` for one sample: mean over positions of the squared map difference."""
    qs, qt = hand_map(student), hand_map(teacher)
    return sum((a - b) ** 2 for a, b in zip(qs, qt)) / len(qs)


def as_features(channels: list[list[float]]) -> torch.Tensor:
    """C lists of H·W = 4 values → a 1×C×2×2 float64 tensor."""
    return torch.tensor(channels, dtype=torch.float64).reshape(1, len(channels), 2, 2)


S1 = [[1.0, -2.0, 0.0, 3.0], [2.0, 1.0, -1.0, 0.5]]
T1 = [[0.5, 0.5, 2.0, -1.0], [1.0, 0.0, 1.0, 1.0], [0.0, 2.0, 0.0, 1.0]]
S2 = [[3.0, 1.0, 1.0, 0.0]]
T2 = [[1.0, 1.0, 1.0, 1.0], [-2.0, 0.0, 1.0, 0.0]]


def test_attention_map_matches_hand_computation() -> None:
    # q = [(1+4)/2, (4+1)/2, (0+1)/2, (9+0.25)/2] = [2.5, 2.5, 0.5, 4.625]
    q = attention_map(as_features(S1))
    assert q.shape == (1, 4)
    assert q[0].tolist() == pytest.approx(hand_map(S1), rel=1e-12)
    assert float(q.norm()) == pytest.approx(1.0)


def test_at_loss_matches_hand_computation_over_two_layers() -> None:
    beta = 2.0
    criterion = AttentionTransferLoss(["layer2", "layer4"], beta=beta)
    student = {"layer2": as_features(S1), "layer4": as_features(S2), "pooled": torch.zeros(1, 3)}
    teacher = {"layer2": as_features(T1), "layer4": as_features(T2)}
    loss, parts = criterion(student, teacher)
    at2, at4 = hand_at(S1, T1), hand_at(S2, T2)
    assert at2 > 0.01 and at4 > 0.01
    assert parts == pytest.approx({"at_layer2": at2, "at_layer4": at4}, rel=1e-9)
    assert float(loss) == pytest.approx(beta / 2 * (at2 + at4), rel=1e-9)


def test_at_loss_averages_over_the_batch() -> None:
    criterion = AttentionTransferLoss(["layer3"], beta=2.0)
    student = torch.cat([as_features(S1), as_features(T1[:2])])
    teacher = torch.cat([as_features(T1[:2]), as_features(T1[:2])])  # second sample: identical → 0
    loss, _ = criterion({"layer3": student}, {"layer3": teacher})
    assert float(loss) == pytest.approx(hand_at(S1, T1[:2]) / 2, rel=1e-9)


def test_at_loss_is_zero_for_identical_features() -> None:
    feats = {"layer3": torch.randn(4, 6, 5, 5), "layer4": torch.randn(4, 8, 3, 3)}
    loss, parts = AttentionTransferLoss(["layer3", "layer4"])(feats, {k: v.clone() for k, v in feats.items()})
    assert float(loss) == pytest.approx(0.0, abs=1e-10)
    assert set(parts) == {"at_layer3", "at_layer4"}


def test_gradient_reaches_the_student_and_never_the_teacher() -> None:
    torch.manual_seed(0)
    teacher_conv, student_conv = torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.Conv2d(3, 2, 3, padding=1)
    x = torch.randn(2, 3, 6, 6)
    teacher = {"layer4": teacher_conv(x)}
    assert teacher["layer4"].requires_grad
    objective = StudentObjective(["layer4"], beta=1000.0)
    logits = torch.randn(2, 8, requires_grad=True)
    loss, stats = objective(logits, torch.tensor([0, 3]), {"layer4": student_conv(x)}, teacher)
    loss.backward()
    assert all(p.grad is None for p in teacher_conv.parameters())
    assert student_conv.weight.grad is not None and float(student_conv.weight.grad.abs().sum()) > 0
    assert stats["loss"] == pytest.approx(stats["ce"] + stats["at"], rel=1e-6)
    assert stats["at"] == pytest.approx(500.0 * stats["at_layer4"], rel=1e-6)


def test_beta_zero_is_exactly_cross_entropy() -> None:
    torch.manual_seed(1)
    logits, targets = torch.randn(5, 8), torch.tensor([0, 1, 7, 3, 3])
    loss, stats = StudentObjective(["layer3"], beta=0.0)(logits, targets, {}, None)
    assert torch.equal(loss, F.cross_entropy(logits, targets))
    assert stats == {"loss": float(loss), "ce": float(loss), "at": 0.0}


def test_class_weights_give_weighted_cross_entropy() -> None:
    torch.manual_seed(2)
    logits, targets = torch.randn(6, 8), torch.tensor([0, 1, 2, 2, 5, 7])
    weights = torch.linspace(0.5, 2.0, 8)
    loss, _ = StudentObjective(beta=0.0, class_weights=weights)(logits, targets, {})
    assert torch.equal(loss, F.cross_entropy(logits, targets, weight=weights))
    assert not torch.equal(loss, F.cross_entropy(logits, targets))


def test_teacher_map_is_resized_to_the_student_grid() -> None:
    # Student features whose attention map is the teacher's map upsampled bilinearly: AT must be 0.
    torch.manual_seed(3)
    teacher = torch.randn(2, 5, 4, 4, dtype=torch.float64)
    upsampled = F.interpolate(teacher.pow(2).mean(1, keepdim=True), size=(8, 8), mode="bilinear",
                              align_corners=False)
    student = upsampled.sqrt().repeat(1, 3, 1, 1).requires_grad_(True)  # 3 channels vs the teacher's 5
    criterion = AttentionTransferLoss(["layer1"], beta=2.0)
    loss, _ = criterion({"layer1": student}, {"layer1": teacher})
    assert float(loss.detach()) == pytest.approx(0.0, abs=1e-12)
    random_student = torch.randn(2, 3, 8, 8, dtype=torch.float64, requires_grad=True)
    other, _ = criterion({"layer1": random_student}, {"layer1": teacher})
    other.backward()
    assert math.isfinite(float(other.detach())) and float(other.detach()) > 1e-4
    assert torch.isfinite(random_student.grad).all() and float(random_student.grad.abs().sum()) > 0


def test_larger_teacher_map_is_shrunk_by_area_average() -> None:
    # A 4×4 teacher map of 2×2 constant blocks shrinks to those blocks' values on the student's 2×2 grid.
    block = torch.tensor([[1.0, 2.0], [3.0, 4.0]], dtype=torch.float64)
    teacher = block.repeat_interleave(2, 0).repeat_interleave(2, 1).sqrt().reshape(1, 1, 4, 4)
    student = block.sqrt().reshape(1, 1, 2, 2)
    loss, _ = AttentionTransferLoss(["layer2"], beta=2.0)({"layer2": student}, {"layer2": teacher})
    assert float(loss) == pytest.approx(0.0, abs=1e-12)


@pytest.mark.parametrize("layers", [[], ["layer5"], ["layer1", "layer1"], ["conv1", "layer2"]])
def test_invalid_layers_are_refused(layers: list[str]) -> None:
    with pytest.raises(ValueError, match="non-empty subset"):
        AttentionTransferLoss(layers)
    with pytest.raises(ValueError):
        StudentObjective(layers, beta=10.0)


def test_missing_feature_maps_and_teacher_are_reported() -> None:
    objective = StudentObjective(["layer3"], beta=10.0)
    logits, targets = torch.randn(2, 8), torch.tensor([0, 1])
    with pytest.raises(ValueError, match="teacher"):
        objective(logits, targets, {"layer3": torch.randn(2, 4, 2, 2)}, None)
    with pytest.raises(KeyError, match="teacher.layer3"):
        objective(logits, targets, {"layer3": torch.randn(2, 4, 2, 2)}, {"layer4": torch.randn(2, 4, 2, 2)})


def test_non_finite_loss_stops_loudly() -> None:
    logits = torch.tensor([[float("nan")] * 8, [0.0] * 8])
    with pytest.raises(FloatingPointError, match="not finite"):
        StudentObjective(beta=0.0)(logits, torch.tensor([0, 1]), {})
    feats = {"layer4": torch.randn(2, 4, 2, 2)}
    with pytest.raises(FloatingPointError):
        StudentObjective(["layer4"], beta=10.0)(logits, torch.tensor([0, 1]), feats, feats)
