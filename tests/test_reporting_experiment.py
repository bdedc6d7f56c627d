"""The seed experiment's tables, paired differences and verdicts, on constructed predictions."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from skin_core.classes import CLASSES
from skin_core.metrics.classification import classification_report
from skin_core.reporting.experiment import (SeedResult, comparison_markdown, mean_std, paired_differences,
                                            seed_table, verdict)


def one_hot(labels: np.ndarray) -> np.ndarray:
    return np.eye(len(CLASSES))[labels]


def seed_result(seed: int, y: np.ndarray, base_pred: np.ndarray, at_pred: np.ndarray) -> SeedResult:
    """Test images only, HAM; the AT model's predictions given, probabilities one-hot."""
    frames = []
    for variant, pred in (("baseline", base_pred), ("layer3", at_pred)):
        probs = pd.DataFrame(one_hot(pred), columns=list(CLASSES))
        for weights in ("kept", "last"):
            frames.append(pd.concat([pd.DataFrame({"image_id": [f"s{seed}-{i}" for i in range(len(y))],
                                                   "label_idx": y, "variant": variant, "weights": weights,
                                                   "split": "test", "test_set": "HAM-test"}), probs], axis=1))
    reports = {"HAM-test": {name: classification_report(y, one_hot(p)).to_dict()
                            for name, p in (("baseline", base_pred), ("AT layer3", at_pred))}}
    return SeedResult(seed, reports, reports, pd.concat(frames, ignore_index=True),
                      teacher={"knn_balanced_accuracy": 0.3, "knn_init_balanced_accuracy": 0.2},
                      kept_epochs={"baseline": (2, 5), "layer3": (4, 5)})


def constructed(gain: int | list[int], seeds: int = 3, n: int = 400) -> list[SeedResult]:
    """The AT model right on ``gain`` more images than the baseline (a list: one gain per seed; a negative gain
    makes it wrong on that many of the baseline's right answers), balanced over 4 classes."""
    gains = gain if isinstance(gain, list) else [gain] * seeds
    out = []
    for seed, g in enumerate(gains):
        rng = np.random.default_rng(seed)
        y = np.tile(np.arange(4), n // 4)
        base = np.where(rng.random(n) < 0.5, y, (y + 1) % 4)
        changed = rng.choice(np.flatnonzero((base != y) if g >= 0 else (base == y)), abs(g), replace=False)
        at = base.copy()
        at[changed] = y[changed] if g >= 0 else (y[changed] + 2) % 4
        out.append(seed_result(seed, y, base, at))
    return out


def test_mean_and_std_over_seeds_match_numpy() -> None:
    results = constructed(gain=40)
    table = seed_table(results)
    summary = mean_std(table)
    row = summary[(summary["weights"] == "kept") & (summary["model"] == "AT layer3")].iloc[0]
    values = [r.metrics["HAM-test"]["AT layer3"]["balanced_accuracy"] for r in results]
    assert row["balanced_accuracy"] == pytest.approx(np.mean(values))
    assert row["balanced_accuracy std"] == pytest.approx(np.std(values, ddof=1))
    assert row["seeds"] == 3 and set(table["weights"]) == {"kept", "last"}


def test_a_large_gain_is_found_and_its_verdict_says_so() -> None:
    diffs = paired_differences(constructed(gain=80), n_boot=500)
    acc = diffs[(diffs["set"] == "HAM-test") & (diffs["metric"] == "accuracy")].iloc[0]
    assert acc["difference"] == pytest.approx(80 / 400)  # exactly the constructed gain, every seed
    assert acc["low"] > 0 and acc["excludes_zero"]
    assert "supports an improvement" in verdict(diffs, "HAM-test", "accuracy")


def test_a_pooled_gain_that_one_seed_reverses_is_not_called_an_improvement() -> None:
    """Two seeds gain 30 images, one loses 10: the image-level interval clears 0, the seeds disagree."""
    diffs = paired_differences(constructed(gain=[30, 30, -10]), n_boot=500)
    acc = diffs[(diffs["set"] == "HAM-test") & (diffs["metric"] == "accuracy")].iloc[0]
    assert acc["per_seed"] == "+0.075, +0.075, -0.025" and acc["low"] > 0
    said = verdict(diffs, "HAM-test", "accuracy")
    assert "seeds disagree in sign" in said and "supports an improvement" not in said


def test_gains_too_small_to_show_at_three_decimals_still_count_as_agreeing_seeds() -> None:
    """15 images of 40,000 per seed: +0.000375, printed +0.000; the verdict reads the numbers, not the print."""
    diffs = paired_differences(constructed(gain=15, n=40_000), n_boot=100)
    acc = diffs[(diffs["set"] == "HAM-test") & (diffs["metric"] == "accuracy")].iloc[0]
    assert acc["per_seed"] == "+0.000, +0.000, +0.000" and acc["low"] > 0 and acc["seeds_agree"] == 1
    assert "supports an improvement" in verdict(diffs, "HAM-test", "accuracy")


def test_a_consistent_loss_contradicts_the_improvement() -> None:
    diffs = paired_differences(constructed(gain=-60), n_boot=500)
    assert "contradicts it" in verdict(diffs, "HAM-test", "accuracy")


def test_identical_models_cannot_be_told_apart() -> None:
    diffs = paired_differences(constructed(gain=0), n_boot=300)
    assert (diffs["difference"] == 0).all() and (diffs["low"] == 0).all() and (diffs["high"] == 0).all()
    assert "cannot tell" in verdict(diffs, "HAM-test", "balanced_accuracy")


def test_markdown_holds_every_table() -> None:
    results = constructed(gain=20)
    table = seed_table(results)
    text = comparison_markdown(results, mean_std(table), paired_differences(results, n_boot=200))
    for heading in ("HAM-test: kept epoch", "HAM-test: last epoch", "Attention transfer − baseline",
                    "k-NN", "Kept epochs"):
        assert heading in text
    assert "epoch 5 of 5" in text and "| AT layer3 − baseline | HAM-test | accuracy | +0.050 |" in text
