"""The synthetic dermoscopy generator: layout, determinism, sampling plan, and image content."""

from __future__ import annotations

import csv
import re
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import StratifiedKFold, cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from skin_core.classes import CLASSES, ORIGINS, origin_of
from skin_core.data.isic import MASK_DIR, lesion_mask_uri, load_isic
from skin_core.synth import SynthReport, generate_dataset, plan_dataset
from skin_core.synth import dataset as synth_dataset
from skin_core.synth.dataset import (
    FACTORS_CSV,
    GROUND_TRUTH_CSV,
    INPUT_DIR,
    METADATA_CSV,
    class_counts,
    origin_counts,
)
from skin_core.synth.lesion import FEATURES, STYLES

SITES = {"anterior torso", "posterior torso", "head/neck", "lower extremity", "upper extremity",
         "palms/soles", "oral/genital", "lateral torso"}
N_SMALL, SIZE_SMALL = 48, 64


@pytest.fixture(scope="module")
def small(tmp_path_factory) -> tuple[Path, SynthReport]:
    out = tmp_path_factory.mktemp("synth_small")
    return out, generate_dataset(out, n=N_SMALL, size=SIZE_SMALL, seed=3)


def _read(out: Path, name: str) -> pd.DataFrame:
    return pd.read_csv(out / name, dtype=str, keep_default_na=False)


def _header(path: Path) -> list[str]:
    with open(path, newline="") as fh:
        return next(csv.reader(fh))


def _image(out: Path, image_id: str) -> np.ndarray:
    bgr = cv2.imread(str(out / INPUT_DIR / f"{image_id}.jpg"), cv2.IMREAD_COLOR)
    assert bgr is not None, image_id
    return bgr[..., ::-1]


def _mask(out: Path, image_id: str) -> np.ndarray:
    mask = cv2.imread(lesion_mask_uri(out, image_id), cv2.IMREAD_UNCHANGED)
    assert mask is not None, image_id
    return mask


def test_layout_and_headers(small):
    out, report = small
    assert _header(out / GROUND_TRUTH_CSV) == ["image", *CLASSES, "UNK"]
    assert _header(out / METADATA_CSV) == ["image", "age_approx", "anatom_site_general", "lesion_id", "sex"]
    assert _header(out / FACTORS_CSV)[:9] == ["image", "label", "origin", "border", "hair", "ruler", "marker",
                                              "lighting", "lesion_id"]
    gt = _read(out, GROUND_TRUTH_CSV)
    assert gt["image"].tolist() == [f"ISIC_{9_000_000 + i}" for i in range(N_SMALL)]
    assert sorted(p.stem for p in (out / INPUT_DIR).glob("*.jpg")) == gt["image"].tolist()
    assert _image(out, gt["image"].iloc[0]).shape == (SIZE_SMALL, SIZE_SMALL, 3)
    assert not list(out.glob("*.part"))
    assert report.n_images == N_SMALL and report.out_dir == out


def test_ground_truth_is_one_hot_like_the_real_file(small):
    out, _ = small
    lines = (out / GROUND_TRUTH_CSV).read_text().splitlines()[1:]
    assert all(re.fullmatch(r"ISIC_\d{7}(,[01]\.0){8},0\.0", line) for line in lines)
    gt = pd.read_csv(out / GROUND_TRUTH_CSV)
    assert (gt[list(CLASSES)].sum(axis=1) == 1.0).all()
    factors = _read(out, FACTORS_CSV)
    assert (gt[list(CLASSES)].idxmax(axis=1) == factors["label"]).all()


def test_metadata_values_and_lesion_origin(small):
    out, _ = small
    meta = _read(out, METADATA_CSV)
    factors = _read(out, FACTORS_CSV)
    assert all(a == "" or (a.isdigit() and int(a) % 5 == 0) for a in meta["age_approx"])
    assert set(meta["anatom_site_general"]) <= SITES | {""}
    assert set(meta["sex"]) <= {"male", "female", ""}
    assert [origin_of(x) for x in meta["lesion_id"]] == factors["origin"].tolist()
    assert (meta["lesion_id"] == factors["lesion_id"]).all()
    known = meta["lesion_id"][meta["lesion_id"] != ""]
    assert known.str.fullmatch(r"(HAM_|BCN_|MSK4_)\d{7}").all()


def test_report_matches_written_tables(small):
    out, report = small
    factors = _read(out, FACTORS_CSV)
    assert list(report.class_counts) == list(CLASSES)
    assert report.class_counts == {c: int((factors["label"] == c).sum()) for c in CLASSES}
    assert report.origin_counts == {o: int((factors["origin"] == o).sum()) for o in ORIGINS}
    singles = int((factors["lesion_id"] == "").sum())
    assert report.n_lesions == singles + factors.loc[factors["lesion_id"] != "", "lesion_id"].nunique()
    assert report.n_lesions < N_SMALL  # some lesions were photographed more than once
    with pytest.raises(AttributeError):
        report.n_images = 0  # frozen


@pytest.mark.parametrize("n", [40, 48, 57])
def test_every_class_and_origin_present_in_small_sets(n):
    plan = plan_dataset(n, seed=1)
    counts = plan["label"].value_counts()
    assert len(plan) == n
    assert all(counts.get(c, 0) >= 3 for c in CLASSES)
    assert set(plan["origin"]) == set(ORIGINS)


def test_class_counts_follow_isic_imbalance_at_600():
    counts = plan_dataset(600, seed=0)["label"].value_counts()
    assert counts.sum() == 600 and counts.to_dict() == class_counts(600)
    assert counts.idxmax() == "NV"
    assert counts["NV"] > counts["MEL"] > counts["BCC"] > counts["BKL"] > counts["AK"]
    assert counts["DF"] == counts["VASC"] == 12  # the 2% floor, above their ISIC share
    assert abs(counts["NV"] / 600 - 12875 / 25331) < 0.03


def test_origin_counts_follow_isic_proportions():
    assert origin_counts(25331) == {"HAM": 10015, "BCN": 12413, "MSK": 819, "unknown": 2084}
    counts = plan_dataset(600, seed=0)["origin"].value_counts()
    assert counts["BCN"] > counts["HAM"] > counts["unknown"] > counts["MSK"] > 0


def test_repeated_lesions_share_class_and_origin():
    plan = plan_dataset(600, seed=0)
    per_lesion = plan.groupby("lesion_key").agg(images=("image", "size"), labels=("label", "nunique"),
                                                origins=("origin", "nunique"), ids=("lesion_id", "nunique"))
    repeated = per_lesion[per_lesion["images"] > 1]
    assert 0.05 < len(repeated) / len(per_lesion) < 0.3
    assert repeated["images"].max() <= 3
    assert (repeated[["labels", "origins", "ids"]] == 1).all().all()
    unknown = plan[plan["origin"] == "unknown"]
    assert (unknown["lesion_id"] == "").all() and unknown["lesion_key"].is_unique


def test_repeated_lesion_images_differ_but_look_alike(small):
    out, _ = small
    factors = _read(out, FACTORS_CSV)
    ids = factors[factors["lesion_id"] != ""].groupby("lesion_id")["image"].apply(list)
    pair = ids[ids.str.len() > 1].iloc[0][:2]
    a, b = (_image(out, i).astype(float) for i in pair)
    assert np.abs(a - b).mean() > 1.0  # different pose / acquisition
    assert (factors.set_index("image").loc[pair, "label"].nunique()) == 1


def test_every_image_has_a_binary_lesion_mask_of_its_size(small):
    out, _ = small
    images = _read(out, GROUND_TRUTH_CSV)["image"].tolist()
    assert sorted(p.stem for p in (out / MASK_DIR).glob("*.png")) == images
    for image_id in images:
        mask = _mask(out, image_id)
        assert mask.shape == (SIZE_SMALL, SIZE_SMALL) and mask.dtype == np.uint8
        assert set(np.unique(mask)) == {0, 255}  # binary, with lesion and skin both present


def test_lesion_masks_sit_on_the_darker_lesion_pixels(small):
    out, _ = small
    images = _read(out, FACTORS_CSV)["image"].tolist()
    grey = [_image(out, i).mean(axis=2) for i in images]
    masks = [_mask(out, i) > 0 for i in images]
    # compare within the field of view: the vignette's black corners are darker than any lesion
    yy, xx = np.mgrid[:SIZE_SMALL, :SIZE_SMALL] - (SIZE_SMALL - 1) / 2
    fov = np.hypot(yy, xx) < 0.4 * SIZE_SMALL
    darker = [g[m].mean() < g[fov & ~m].mean() for g, m in zip(grey, masks)]
    assert np.mean(darker) >= 0.8

    def median_auc(pairs) -> float:  # how well darkness ranks lesion pixels above skin
        return float(np.median([roc_auc_score(m[fov], -g[fov]) for g, m in pairs]))

    own = median_auc(zip(grey, masks))
    others = median_auc(zip(grey, masks[1:] + masks[:1]))  # the next image's mask: same centre, other pose
    assert own > 0.9 and own - others > 0.15, (own, others)


def test_same_seed_is_byte_identical_and_other_seed_differs(tmp_path):
    def files(out: Path) -> dict[str, bytes]:
        return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}

    runs = [files(_generated(tmp_path / name, seed)) for name, seed in (("a", 5), ("b", 5), ("c", 6))]
    assert runs[0] == runs[1]
    assert runs[0].keys() == runs[2].keys()
    assert runs[0][GROUND_TRUTH_CSV] != runs[2][GROUND_TRUTH_CSV]
    assert any(runs[0][k] != runs[2][k] for k in runs[0] if k.endswith(".jpg"))


def _generated(out: Path, seed: int) -> Path:
    generate_dataset(out, n=30, size=48, seed=seed)
    return out


def test_plan_is_a_pure_function_of_n_and_seed():
    pd.testing.assert_frame_equal(plan_dataset(100, seed=9), plan_dataset(100, seed=9))
    assert not plan_dataset(100, seed=9)["label"].equals(plan_dataset(100, seed=10)["label"])


def _corner_mean(img: np.ndarray) -> float:
    k = max(4, img.shape[0] // 10)
    return float(np.mean([img[:k, :k], img[:k, -k:], img[-k:, :k], img[-k:, -k:]]))


def test_vignette_darkens_corners_only_where_flagged(small):
    out, _ = small
    factors = _read(out, FACTORS_CSV)
    bordered = factors[(factors["origin"] == "BCN") & (factors["border"] == "True")]
    clear = factors[factors["border"] == "False"]
    assert len(bordered) >= 5 and len(clear) >= 5
    assert all(_corner_mean(_image(out, i)) < 30 for i in bordered["image"])
    assert all(_corner_mean(_image(out, i)) > 50 for i in clear["image"])


def test_vignette_is_mostly_bcn():
    plan = plan_dataset(2000, seed=0)
    rate = plan.groupby("origin")["border"].mean()
    assert rate["BCN"] > 0.8 and rate.drop("BCN").max() < 0.2


def _cramers_v(a: pd.Series, b: pd.Series) -> float:
    table = pd.crosstab(a, b).to_numpy(float)
    expected = table.sum(1, keepdims=True) * table.sum(0, keepdims=True) / table.sum()
    chi2 = ((table - expected) ** 2 / expected).sum()
    return float(np.sqrt(chi2 / (table.sum() * (min(table.shape) - 1))))


@pytest.mark.parametrize("factor", ["hair", "ruler", "marker", "lighting", "border", "origin"])
def test_acquisition_is_independent_of_class(factor):
    plan = plan_dataset(4000, seed=0)
    assert _cramers_v(plan["label"], plan[factor]) < 0.1
    assert _cramers_v(plan["label"], plan["label"]) > 0.9  # the measure can fail
    if factor in ("hair", "ruler", "marker"):
        assert plan.loc[plan[factor], "label"].nunique() == len(CLASSES)


def _hand_features(img: np.ndarray) -> np.ndarray:
    """Colour of the lesion centre, absolute and relative to the surrounding skin, and dark fractions."""
    img = img.astype(np.float32) / 255.0
    size = img.shape[0]
    yy, xx = np.mgrid[0:size, 0:size] - (size - 1) / 2
    dist = np.hypot(xx, yy) / size
    centre, ring = img[dist < 0.2], img[(dist > 0.32) & (dist < 0.42)]
    rel = centre / (np.median(ring, axis=0) + 1e-3)
    grey = rel.mean(axis=1)
    return np.r_[centre.mean(0), centre.std(0), rel.mean(0), rel.std(0), (grey < 0.5).mean(), (grey < 0.7).mean()]


def test_classes_are_learnable_from_simple_colour_features(tmp_path):
    generate_dataset(tmp_path, n=200, size=64, seed=11)
    factors = _read(tmp_path, FACTORS_CSV)
    x = np.array([_hand_features(_image(tmp_path, i)) for i in factors["image"]])
    y = factors["label"].to_numpy()
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=3000))
    accuracy = cross_val_score(model, x, y, cv=StratifiedKFold(4, shuffle=True, random_state=0)).mean()
    majority = pd.Series(y).value_counts(normalize=True).iloc[0]
    assert accuracy > majority + 0.12, (accuracy, majority)


def test_half_written_dataset_has_no_tables(tmp_path, monkeypatch):
    generate_dataset(tmp_path, n=24, size=32, seed=0)  # a previous complete run
    real_render = synth_dataset.render_image

    def failing_render(row, index, size, seed):
        if index == 10:
            raise RuntimeError("interrupted")
        return real_render(row, index, size, seed)

    monkeypatch.setattr(synth_dataset, "render_image", failing_render)
    with pytest.raises(RuntimeError, match="interrupted"):
        generate_dataset(tmp_path, n=30, size=32, seed=1)
    assert not list(tmp_path.glob("*.csv"))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"n": 10}, "n=10 is too small"), ({"n": 23}, "at least 24"), ({"size": 16}, "size=16 is too small"),
     ({"n": 40.0}, "n must be an integer"), ({"n": True}, "n must be an integer"), ({"seed": -1}, "seed=-1")],
)
def test_bad_arguments_raise_clear_errors(tmp_path, kwargs, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        generate_dataset(tmp_path, **{"n": 40, "size": 32, "seed": 0, **kwargs})
    assert not list(tmp_path.iterdir())  # nothing written before validation


def test_uri_out_dir_is_refused():
    with pytest.raises(ValueError, match="local folder"):
        generate_dataset("s3://bucket/synth", n=24, size=32)


def test_project_loader_reads_the_generated_set(small):
    out, report = small
    manifest = load_isic(str(out))
    assert len(manifest) == report.n_images and not manifest.rejects
    assert manifest.frame["origin"].value_counts().to_dict() == {o: c for o, c in report.origin_counts.items() if c}


def test_every_class_has_a_style_with_known_features():
    assert set(STYLES) == set(CLASSES)
    assert all(set(style.features) <= set(FEATURES) for style in STYLES.values())
