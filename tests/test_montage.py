"""Cluster montage: PNG of the expected pixel size, readable, thumbnails chosen by centroid distance."""

from __future__ import annotations

from pathlib import Path

import cv2
import matplotlib.image as mpimg
import numpy as np
import pytest

from skin_core.plots import class_mix, cluster_montage, montage_size
from skin_core.plots.montage import CAPTION_PX, TITLE_PX


def thumbnails(n: int, size: int = 48, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 60, (size, size, 3), dtype=np.uint8) for _ in range(n)]  # dark noise


@pytest.mark.parametrize("n_clusters, per_row, thumb_px", [(4, 12, 64), (7, 5, 32)])
def test_png_size_follows_clusters_and_per_row(tmp_path: Path, n_clusters: int, per_row: int,
                                               thumb_px: int) -> None:
    clusters = np.arange(90) % n_clusters  # some rows shorter than per_row when per_row is large
    labels = ["NV" if i % 3 else "MEL" for i in range(90)]
    out = cluster_montage(thumbnails(90), clusters, labels, out_path=tmp_path / "sub" / "m.png",
                          per_row=per_row, thumb_px=thumb_px, title="test")
    assert out == tmp_path / "sub" / "m.png"
    expected_w, expected_h = CAPTION_PX + per_row * thumb_px, TITLE_PX + n_clusters * thumb_px
    assert montage_size(n_clusters, per_row, thumb_px) == (expected_w, expected_h)
    assert mpimg.imread(out).shape[:2] == (expected_h, expected_w)
    decoded = cv2.imread(str(out), cv2.IMREAD_COLOR)
    assert decoded is not None and decoded.shape == (expected_h, expected_w, 3)


def test_distances_put_the_closest_thumbnail_first(tmp_path: Path) -> None:
    images = thumbnails(20)
    images[7] = np.zeros_like(images[7])
    images[7][..., 0] = 255  # the one red thumbnail, last by order but nearest the centroid
    distances = np.ones(20)
    distances[7] = 0.0
    clusters = np.zeros(20, dtype=int)
    out = cluster_montage(images, clusters, ["NV"] * 20, out_path=tmp_path / "m.png", per_row=4,
                          distances=distances, thumb_px=64)
    pixel = cv2.imread(str(out))[TITLE_PX + 32, CAPTION_PX + 32]  # centre of the first cell, BGR
    assert pixel[2] > 200 and pixel[0] < 50 and pixel[1] < 50
    first = cluster_montage(images, clusters, ["NV"] * 20, out_path=tmp_path / "f.png", per_row=4, thumb_px=64)
    assert cv2.imread(str(first))[TITLE_PX + 32, CAPTION_PX + 32][2] < 100  # without distances: image 0


def test_class_mix_caption() -> None:
    assert class_mix(["NV"] * 6 + ["MEL"] * 3 + ["BKL"] + ["DF"]) == "NV 55% MEL 27% BKL 9%"


def test_mismatched_inputs_raise(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="equally long"):
        cluster_montage(thumbnails(3), np.zeros(4, dtype=int), ["NV"] * 3, out_path=tmp_path / "m.png")
    mixed = thumbnails(2) + thumbnails(1, size=32)
    with pytest.raises(ValueError, match="one size"):
        cluster_montage(mixed, np.zeros(3, dtype=int), ["NV"] * 3, out_path=tmp_path / "m.png")


def test_captions_describe_the_whole_cluster_when_thumbnails_are_a_sample(tmp_path) -> None:
    from unittest import mock

    import skin_core.plots.montage as montage

    thumbs = [np.full((16, 16, 3), 100, np.uint8)] * 2
    seen = {}
    real = montage.add_caption

    def spy(fig, row, cluster, labels, *args, **kwargs):
        seen[cluster] = list(labels)
        return real(fig, row, cluster, labels, *args, **kwargs)

    with mock.patch.object(montage, "add_caption", spy):
        montage.cluster_montage(thumbs, np.array([0, 1]), ["NV", "MEL"], out_path=tmp_path / "m.png", per_row=2,
                                population=(np.array([0, 0, 0, 1]), ["NV", "NV", "BCC", "MEL"]))
    assert seen == {0: ["NV", "NV", "BCC"], 1: ["MEL"]}
