"""The Ray Data preprocessing job: real images, bad images, atomic publishing, idempotence, S3."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest

import raytasks.preprocess as rp
import raytasks.stages
from raytasks.stages import load_output
from skin_core import storage
from skin_core.config import PreprocessConfig
from skin_core.data.isic import IMAGE_DIR
from skin_core.preprocessing.pipeline import preprocess_image
from skin_core.publish import MARKER, PublishError, read_publication
from test_isic_loader import write_dataset

pytestmark = pytest.mark.usefixtures("ray_local")


def decode_png(data: bytes) -> np.ndarray:
    return cv2.cvtColor(cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)


def jpeg(rng: np.random.Generator, size: int = 96) -> bytes:
    field = np.full((size, size, 3), (200, 160, 140), np.uint8) + rng.integers(0, 20, (size, size, 3), dtype=np.uint8)
    cv2.circle(field, (size // 2, size // 2), size // 5, (90, 60, 40), -1)
    return cv2.imencode(".jpg", field)[1].tobytes()


@pytest.fixture()
def small_set(tmp_path: Path) -> Path:
    """Eleven good JPEGs plus a corrupt, a truncated, a too-small, a non-image and a missing image."""
    labels = {f"ISIC_{i:07d}": c for i, c in enumerate(["MEL", "NV", "BCC", "AK", "BKL", "DF", "VASC", "SCC"] * 2)}
    ids = list(labels)
    root = write_dataset(tmp_path / "data", labels, images=ids[:-1])  # the last one has no file
    rng = np.random.default_rng(0)
    for image_id in ids[:-1]:
        (root / IMAGE_DIR / f"{image_id}.jpg").write_bytes(jpeg(rng))
    good = jpeg(rng)
    (root / IMAGE_DIR / f"{ids[8]}.jpg").write_bytes(b"\xff\xd8\xff\xe0" + rng.bytes(2000) + b"\xff\xd9")
    (root / IMAGE_DIR / f"{ids[11]}.jpg").write_bytes(b"this is a text file, not an image")
    (root / IMAGE_DIR / f"{ids[9]}.jpg").write_bytes(good[: len(good) // 2])
    (root / IMAGE_DIR / f"{ids[10]}.jpg").write_bytes(cv2.imencode(".jpg", np.zeros((8, 8, 3), np.uint8))[1].tobytes())
    return root


def read_all(out: str) -> pd.DataFrame:
    return rp.read_shards(load_output(out, rp.PreprocessSummary)).to_pandas()


def test_real_sample_black_edges_removed(isic_sample: Path, tmp_path: Path) -> None:
    out = str(tmp_path / "out")
    result = rp.run_preprocess(str(isic_sample), out, PreprocessConfig(size=224))
    assert result.summary.written == 211 and result.summary.rejected == {}
    frame = read_all(out)
    images = {row.image_id: decode_png(row.image) for row in frame.itertuples()}
    assert all(img.shape == (224, 224, 3) for img in images.values())
    bcn = frame[frame["origin"] == "BCN"]
    dark = [float((images[i] < 20).all(axis=2).mean()) for i in bcn["image_id"]]
    assert len(dark) == 96 and np.mean(dark) < 0.02
    assert bcn["had_border"].sum() >= 40
    # untouched images keep their whole frame; cropped ones record a smaller box
    area = (frame["crop_x1"] - frame["crop_x0"]) * (frame["crop_y1"] - frame["crop_y0"])
    full = frame["orig_width"] * frame["orig_height"]
    assert (area[~frame["had_border"]] == full[~frame["had_border"]]).all()
    assert (area[frame["had_border"]] < 0.98 * full[frame["had_border"]]).all()
    # Ray schedules the same skin_core function: pixels equal a direct call
    first = frame.iloc[0]
    direct = preprocess_image(Path(first["uri"]).read_bytes(), size=224, name=first["image_id"])
    assert np.array_equal(images[first["image_id"]], direct.image)


def test_bad_images_are_rejected_and_the_rest_written(small_set: Path, tmp_path: Path) -> None:
    out = str(tmp_path / "out")
    result = rp.run_preprocess(str(small_set), out, PreprocessConfig(size=32))
    assert result.summary.images_in == 16 and result.summary.written == 11
    assert result.summary.rejected == {"corrupt": 1, "truncated": 1, "too_small": 1, "unsupported": 1,
                                         "missing image file": 1}
    rejects = pd.read_csv(next(Path(u) for u in result.publication.uris("rejects.csv")))
    assert set(rejects["image_id"]) == {"ISIC_0000008", "ISIC_0000009", "ISIC_0000010", "ISIC_0000011",
                                         "ISIC_0000015"}
    assert len(read_all(out)) == 11


def test_interrupted_run_publishes_nothing_and_rerun_completes(small_set: Path, tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    out = str(tmp_path / "out")

    def killed(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt("killed before the completion marker")

    monkeypatch.setattr(raytasks.stages, "publish", killed)
    with pytest.raises(KeyboardInterrupt):
        rp.run_preprocess(str(small_set), out, PreprocessConfig(size=32))
    assert read_publication(out) is None and not (tmp_path / "out" / MARKER).exists()
    assert len(storage.list_folders(out)) == 1  # the abandoned run's shards, read by no one
    with pytest.raises(PublishError, match="no completed output"):
        read_all(out)
    monkeypatch.undo()
    result = rp.run_preprocess(str(small_set), out, PreprocessConfig(size=32))
    assert storage.list_folders(out) == [result.publication.run]
    assert len(read_all(out)) == 11


def test_rerun_is_a_no_op_and_another_config_is_refused(small_set: Path, tmp_path: Path) -> None:
    out = str(tmp_path / "out")
    first = rp.run_preprocess(str(small_set), out, PreprocessConfig(size=32))
    marker = tmp_path / "out" / MARKER
    stamp = marker.stat().st_mtime_ns
    again = rp.run_preprocess(str(small_set), out, PreprocessConfig(size=32, batch_size=4))
    assert again.reused and again.publication == first.publication and marker.stat().st_mtime_ns == stamp
    with pytest.raises(PublishError, match="already holds output made with config"):
        rp.run_preprocess(str(small_set), out, PreprocessConfig(size=48))


def test_s3_round_trip(small_set: Path, s3_bucket: str) -> None:
    storage.upload_tree(small_set, f"{s3_bucket}/isic")
    out = f"{s3_bucket}/preprocessed"
    result = rp.run_preprocess(f"{s3_bucket}/isic", out, PreprocessConfig(size=32))
    assert result.summary.written == 11
    assert storage.exists(f"{out}/{MARKER}") and all(u.startswith(out) for u in result.publication.uris())
    frame = read_all(out)
    assert len(frame) == 11 and decode_png(frame.iloc[0]["image"]).shape == (32, 32, 3)
    assert rp.run_preprocess(f"{s3_bucket}/isic", out, PreprocessConfig(size=32)).reused
