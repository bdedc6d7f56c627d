"""The students' learning-rate schedule against hand values."""

import math

import pytest
import torch

from skin_core.training.schedule import scheduled, warmup_cosine


def test_warmup_then_cosine_by_hand() -> None:
    # 10 steps, 2 of warm-up, base 0.1: 0, 0.05, then cosine over the remaining 8 steps
    assert warmup_cosine(0, 10, 2, 0.1) == 0.0
    assert warmup_cosine(1, 10, 2, 0.1) == pytest.approx(0.05)
    assert warmup_cosine(2, 10, 2, 0.1) == pytest.approx(0.1)
    assert warmup_cosine(6, 10, 2, 0.1) == pytest.approx(0.1 * 0.5 * (1 + math.cos(math.pi * 4 / 8)))
    assert warmup_cosine(0, 10, 0, 0.1) == pytest.approx(0.1)
    with pytest.raises(ValueError, match="warmup"):
        warmup_cosine(0, 10, 10, 0.1)


def test_scheduled_sets_each_step_and_resumes_at_the_same_rate() -> None:
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
    seen = [optimizer.param_groups[0]["lr"] for _ in scheduled(range(4), optimizer, 4, 12, 2, 0.2)]
    assert seen == pytest.approx([warmup_cosine(t, 12, 2, 0.2) for t in range(4, 8)])
