"""The ISIC 2019 layout → manifest: real tables, real sample, bad input, S3."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from skin_core import storage
from skin_core.classes import CLASSES
from skin_core.data.isic import GROUND_TRUTH, IMAGE_DIR, MANIFEST_COLUMNS, METADATA, DatasetError, load_isic
from skin_core.data.summary import summarize

GT_HEADER = "image,MEL,NV,BCC,AK,BKL,DF,VASC,SCC,UNK"
META_HEADER = "image,age_approx,anatom_site_general,lesion_id,sex"


def one_hot(label: str) -> str:
    return ",".join("1.0" if c == label else "0.0" for c in [*CLASSES, "UNK"])


def write_dataset(root: Path, labels: dict[str, str], lesions: dict[str, str] | None = None,
                  images: list[str] | None = None) -> Path:
    """A tiny ISIC-layout dataset: ``labels`` image → class; image files need only exist."""
    lesions = lesions or {}
    (root / IMAGE_DIR).mkdir(parents=True, exist_ok=True)
    (root / GROUND_TRUTH).write_text("\n".join([GT_HEADER, *(f"{i},{one_hot(c)}" for i, c in labels.items())]) + "\n")
    meta = [f"{i},45,anterior torso,{lesions.get(i, '')},female" for i in labels]
    (root / METADATA).write_text("\n".join([META_HEADER, *meta]) + "\n")
    for image in labels if images is None else images:
        (root / IMAGE_DIR / f"{image}.jpg").write_bytes(b"\xff\xd8 not decoded by the loader")
    return root


@pytest.fixture()
def tiny(tmp_path: Path) -> Path:
    labels = {f"ISIC_{i:07d}": CLASSES[i % len(CLASSES)] for i in range(10)}
    lesions = {"ISIC_0000000": "HAM_0000001", "ISIC_0000001": "HAM_0000001", "ISIC_0000002": "BCN_0000009",
               "ISIC_0000003": "MSK4_0000003"}
    return write_dataset(tmp_path / "tiny", labels, lesions)


def test_real_tables_match_the_published_counts(shared_data: Path) -> None:
    summary = summarize(load_isic(str(shared_data / "isic2019"), check_images=False))
    assert summary.images == 25_331 and summary.unk_dropped == 0
    assert summary.per_class == {"MEL": 4522, "NV": 12875, "BCC": 3323, "AK": 867, "BKL": 2624,
                                 "DF": 239, "VASC": 253, "SCC": 628}
    assert summary.per_origin == {"HAM": 10015, "BCN": 12413, "MSK": 819, "unknown": 2084}
    # Shared lesion ids make groups smaller in number than images; each image has one.
    assert 0 < summary.multi_image_lesions < summary.lesion_groups < summary.images


def test_real_sample_loads_with_no_rejects(isic_sample: Path) -> None:
    manifest = load_isic(str(isic_sample))
    summary = summarize(manifest)
    assert manifest.rejects == () and len(manifest) == 211
    assert summary.per_origin == {"HAM": 91, "BCN": 96, "MSK": 11, "unknown": 13}
    assert summary.per_class["NV"] == 99 and summary.per_class["DF"] == 3
    assert all(Path(uri).is_file() for uri in manifest.frame["uri"])
    assert list(manifest.frame.columns) == list(MANIFEST_COLUMNS)


def test_manifest_fields(tiny: Path) -> None:
    frame = load_isic(str(tiny)).frame.set_index("image_id")
    assert frame.loc["ISIC_0000000", "origin"] == "HAM" and frame.loc["ISIC_0000002", "origin"] == "BCN"
    assert frame.loc["ISIC_0000003", "origin"] == "MSK" and frame.loc["ISIC_0000004", "origin"] == "unknown"
    # an empty lesion id falls back to the image id, so every image has a lesion group
    assert frame.loc["ISIC_0000004", "lesion_id"] == "ISIC_0000004"
    assert frame.loc["ISIC_0000000", "lesion_id"] == frame.loc["ISIC_0000001", "lesion_id"]
    assert [CLASSES[i] for i in frame["label_idx"]] == list(frame["label"])
    assert frame.loc["ISIC_0000005", "age"] == 45.0 and frame.loc["ISIC_0000005", "sex"] == "female"


def test_missing_image_is_rejected_and_the_rest_loads(tmp_path: Path) -> None:
    labels = {"ISIC_1": "MEL", "ISIC_2": "NV", "ISIC_3": "BCC"}
    manifest = load_isic(str(write_dataset(tmp_path, labels, images=["ISIC_1", "ISIC_3"])))
    assert list(manifest.frame["image_id"]) == ["ISIC_1", "ISIC_3"]
    assert [(r.image_id, r.reason) for r in manifest.rejects] == [("ISIC_2", "missing image file")]


def test_unk_rows_are_dropped_and_counted(tiny: Path) -> None:
    lines = (tiny / GROUND_TRUTH).read_text().splitlines()
    lines[3] = lines[3].split(",")[0] + "," + ",".join(["0.0"] * 8 + ["1.0"])
    (tiny / GROUND_TRUTH).write_text("\n".join(lines) + "\n")
    manifest = load_isic(str(tiny))
    assert manifest.unk_dropped == 1 and len(manifest) == 9
    assert "ISIC_0000002" not in set(manifest.frame["image_id"])


@pytest.mark.parametrize("table", [GROUND_TRUTH, METADATA])
def test_missing_csv_names_the_file(tiny: Path, table: str) -> None:
    (tiny / table).unlink()
    with pytest.raises(DatasetError, match=rf"{table}: file not found"):
        load_isic(str(tiny))


@pytest.mark.parametrize(("table", "column"), [(GROUND_TRUTH, "BCC"), (METADATA, "lesion_id")])
def test_missing_column_is_named(tiny: Path, table: str, column: str) -> None:
    path = tiny / table
    rows = [line.split(",") for line in path.read_text().splitlines()]
    drop = rows[0].index(column)
    path.write_text("\n".join(",".join(r[:drop] + r[drop + 1:]) for r in rows) + "\n")
    with pytest.raises(DatasetError, match=rf"{table}: missing column\(s\) {column}"):
        load_isic(str(tiny))


@pytest.mark.parametrize(("values", "message"), [
    (["0.0"] * 9, r"line 5 \(ISIC_0000003\): no class marked"),
    (["1.0", "1.0"] + ["0.0"] * 7, r"line 5 \(ISIC_0000003\): 2 classes marked"),
    (["yes"] + ["0.0"] * 8, r"line 5 \(ISIC_0000003\): column MEL is 'yes'"),
])
def test_bad_label_row_names_file_and_line(tiny: Path, values: list[str], message: str) -> None:
    lines = (tiny / GROUND_TRUTH).read_text().splitlines()
    lines[4] = ",".join(["ISIC_0000003", *values])
    (tiny / GROUND_TRUTH).write_text("\n".join(lines) + "\n")
    with pytest.raises(DatasetError, match=rf"{GROUND_TRUTH}: {message}"):
        load_isic(str(tiny))


@pytest.mark.parametrize("table", [GROUND_TRUTH, METADATA])
def test_duplicate_image_ids_are_refused(tiny: Path, table: str) -> None:
    path = tiny / table
    lines = path.read_text().splitlines()
    path.write_text("\n".join([*lines, lines[3]]) + "\n")
    with pytest.raises(DatasetError, match=rf"{table}: duplicate image id 'ISIC_0000002' on lines 4, 12"):
        load_isic(str(tiny))


def test_s3_layout_loads_like_the_local_one(tiny: Path, s3_bucket: str) -> None:
    (tiny / IMAGE_DIR / "ISIC_0000009.jpg").unlink()
    storage.upload_tree(tiny, f"{s3_bucket}/isic")
    local, remote = load_isic(str(tiny)), load_isic(f"{s3_bucket}/isic")
    assert remote.frame.drop(columns="uri").equals(local.frame.drop(columns="uri"))
    assert remote.frame["uri"].iloc[0] == f"{s3_bucket}/isic/{IMAGE_DIR}/ISIC_0000000.jpg"
    assert [r.image_id for r in remote.rejects] == ["ISIC_0000009"]


def test_s3_missing_table_is_a_clear_error(s3_bucket: str) -> None:
    with pytest.raises(DatasetError, match=rf"{s3_bucket}/nothing/{GROUND_TRUTH}: file not found"):
        load_isic(f"{s3_bucket}/nothing")


def test_cli_info_on_real_tables(shared_data: Path) -> None:
    out = subprocess.run([sys.executable, "-m", "skin_cli", "info", "--data", str(shared_data / "isic2019"),
                          "--no-images", "--json"], capture_output=True, text=True, check=True).stdout
    summary = json.loads(out)
    assert summary["per_class"]["NV"] == 12875 and summary["per_origin"]["BCN"] == 12413
    assert summary["class_by_origin"]["BCC"]["MSK"] == 0


def test_cli_info_reports_bad_input_without_traceback(tiny: Path) -> None:
    (tiny / METADATA).unlink()
    result = subprocess.run([sys.executable, "-m", "skin_cli", "info", "--data", str(tiny)],
                            capture_output=True, text=True)
    assert result.returncode == 2
    assert f"{METADATA}: file not found" in result.stderr and "Traceback" not in result.stderr
