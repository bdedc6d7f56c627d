"""``skin attention`` and the attention stage's pieces, on real sample images (synthetic where ../shared is absent).

The networks are small untrained ResNets saved as a real teacher stage output
and real student bundles, so the command loads them as it loads trained ones;
what is checked is that every drawn map and distance is the loss's own.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from raytasks.attention import choose_images, panel_names
from raytasks.stages import Stage, run_stage
from raytasks.teacher import WEIGHTS, TeacherSummary
from raytasks.tracking import TrackedRun
from conftest import SHARED_DATA
from skin_cli.main import main
from skin_core.attention import TEACHER, image_scores, lesion_focus_table, models_maps
from skin_core.attention.scores import UNIFORM
from skin_core.classes import CLASSES
from skin_core.config import ModelConfig, PreprocessConfig
from skin_core.data.transforms import to_input
from skin_core.layers import LAYERS
from skin_core.losses.attention_transfer import at_term, attention_map
from skin_core.models import create_model
from skin_core.models.bundle import ModelCard, save_bundle
from skin_core.plots.attention import lesion_focus_plot
from skin_core.preprocessing import preprocess_with
from skin_core.synth import generate_dataset

TEACHER_MODEL = ModelConfig(arch="resnet18", embedding_dim=8)
PREPROCESS = PreprocessConfig(size=64)


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    """Three real ISIC images (one of them with the scope's dark border), or synthetic ones without ../shared."""
    real = SHARED_DATA / "isic2019" / "sample" / "ISIC_2019_Training_Input"
    if real.is_dir():
        return [str(p) for p in sorted(real.glob("*.jpg"))[:3]]
    out = tmp_path_factory.mktemp("synth")
    generate_dataset(out, n=20, size=96, seed=0)
    return [str(p) for p in sorted((out / "ISIC_2019_Training_Input").iterdir())[:3]]


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """A teacher stage output and two student bundles (AT layer3, baseline), seeded, on disk."""
    root = tmp_path_factory.mktemp("models")
    torch.manual_seed(1)
    teacher = create_model(TEACHER_MODEL, head="embedding")

    def write(context) -> TeacherSummary:
        buffer = Path(context.path(WEIGHTS))
        buffer.parent.mkdir(parents=True, exist_ok=True)
        torch.save(teacher.state_dict(), buffer)
        return TeacherSummary(images=0, clusters=0, epochs=0, nmi_prev=0.0, cluster_sizes=())

    inputs = {"data": "test", "model": asdict(TEACHER_MODEL), "seed": 1}
    run_stage(Stage("teacher", inputs, TeacherSummary, write), str(root / "teacher"), TrackedRun())
    paths = {"teacher": str(root / "teacher")}
    for seed, variant in ((2, "layer3"), (3, "baseline")):
        torch.manual_seed(seed)
        student = create_model(ModelConfig(arch="resnet18"), head="classifier")
        save_bundle(str(root / variant), student.state_dict(), ModelCard("resnet18", CLASSES, PREPROCESS, variant))
        paths[variant] = str(root / variant)
    return paths


def features(model: torch.nn.Module, image: np.ndarray) -> dict[str, torch.Tensor]:
    with torch.no_grad():
        return model.eval()(to_input(torch.from_numpy(image[None])))


def test_panels_hold_the_loss_attention_maps_and_distances(images, trained, tmp_path, capsys) -> None:
    out = tmp_path / "panels"
    code = main(["attention", *images, "--model", trained["layer3"], "--teacher", trained["teacher"],
                 "--baseline", trained["baseline"], "--out", str(out)])
    assert code == 0
    printed = capsys.readouterr().out.splitlines()
    assert len(printed) == len(images) and all("AT layer3: layer1" in line for line in printed)
    teacher = create_model(TEACHER_MODEL, head="embedding")
    teacher.load_state_dict(torch.load(next(Path(trained["teacher"]).glob("run-*/teacher.pt")), weights_only=True))
    students = {}
    for name, variant in (("AT layer3", "layer3"), ("baseline", "baseline")):
        students[name] = create_model(ModelConfig(arch="resnet18"), head="classifier")
        students[name].load_state_dict(torch.load(Path(trained[variant]) / "student.pt", weights_only=True))
    for uri, name in zip(images, panel_names(images)):
        png, data = out / f"attention_{name}.png", json.loads((out / f"attention_{name}.json").read_text())
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and data["title"] == uri
        pixels = preprocess_with(Path(uri).read_bytes(), PREPROCESS).image  # as in training
        feats = {TEACHER: features(teacher, pixels), **{n: features(m, pixels) for n, m in students.items()}}
        assert list(data["layers"]) == list(LAYERS)
        for layer in LAYERS:
            row = data["layers"][layer]
            for model, f in feats.items():
                side = f[layer].shape[-1]
                expected = attention_map(f[layer]).reshape(side, side).numpy()
                np.testing.assert_allclose(np.array(row["maps"][model]), expected, rtol=1e-5, atol=1e-7)
            assert set(row["distances"]) == set(students)
            for model in students:
                assert row["distances"][model] == pytest.approx(
                    float(at_term(feats[model][layer], feats[TEACHER][layer])), rel=1e-4, abs=1e-9)


def test_registry_uris_and_bad_inputs_are_one_clear_line(images, trained, tmp_path, capsys) -> None:
    # a baseline preprocessed otherwise than the student is refused: its maps would be of other pixels
    other = tmp_path / "other"
    student = create_model(ModelConfig(arch="resnet18"), head="classifier")
    save_bundle(str(other), student.state_dict(), ModelCard("resnet18", CLASSES, PreprocessConfig(size=96), "baseline"))
    code = main(["attention", images[0], "--model", trained["layer3"], "--teacher", trained["teacher"],
                 "--baseline", str(other), "--out", str(tmp_path / "x")])
    assert code == 2 and "not comparable" in capsys.readouterr().err
    code = main(["attention", images[0], "--model", trained["layer3"], "--teacher", trained["layer3"],
                 "--out", str(tmp_path / "x")])
    assert code == 2 and "no completed output" in capsys.readouterr().err
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not an image")
    code = main(["attention", str(broken), "--model", trained["layer3"], "--teacher", trained["teacher"],
                 "--out", str(tmp_path / "x")])
    assert code == 2 and "broken.jpg" in capsys.readouterr().err


def test_panel_names_are_unique_and_file_safe() -> None:
    assert panel_names(["a/ISIC_1.jpg", "b/ISIC_1.jpg", "s3://x/y z.png"]) == ["ISIC_1", "ISIC_1-2", "y_z"]


def test_image_choice_is_seeded_two_per_class_with_bcn_first() -> None:
    rng = np.random.default_rng(0)
    table = pd.DataFrame({"image_id": [f"I{i}" for i in range(60)],
                          "label": rng.choice(["MEL", "NV", "BCC"], 60),
                          "origin": rng.choice(["HAM", "BCN", "MSK"], 60)})
    table.loc[table["label"] == "BCC", "origin"] = "HAM"  # a class without BCN images
    chosen = choose_images(table, seed=4)
    assert chosen.equals(choose_images(table, seed=4)) and not chosen.equals(choose_images(table, seed=5))
    assert chosen["label"].tolist() == ["MEL", "MEL", "NV", "NV", "BCC", "BCC"]
    assert (chosen.groupby("label")["origin"].first().drop("BCC") == "BCN").all()
    assert chosen["image_id"].is_unique
    single = choose_images(table.head(1), seed=0)  # a class with one image gives one
    assert len(single) == 1


def test_scores_and_lesion_focus_tables() -> None:
    """Per-image rows against the loss, lesion shares against masks, and the tables' reference row."""
    images = np.random.default_rng(0).integers(0, 256, (2, 64, 64, 3), dtype=np.uint8)
    torch.manual_seed(0)
    models = {TEACHER: create_model(TEACHER_MODEL, head="embedding"),
              "baseline": create_model(ModelConfig(arch="resnet18"), head="classifier")}
    maps = models_maps(models, images)
    mask = np.zeros((64, 64), bool)
    mask[:32, :32] = True  # a quarter: cells of every layer's grid fall wholly inside or outside
    scores = image_scores(["a", "b"], maps, [mask, None])
    assert len(scores) == 2 * 2 * len(LAYERS)
    assert scores.loc[scores["model"] == TEACHER, "at_distance"].isna().all()
    assert scores.loc[scores["image_id"] == "b", ["lesion_share", "lesion_area"]].isna().all().all()
    a = scores[(scores["image_id"] == "a") & (scores["model"] == "baseline")].set_index("layer")
    for layer in LAYERS:
        q = maps["baseline"][layer][0]
        side = q.shape[0]
        assert a.loc[layer, "lesion_share"] == pytest.approx(q[:side // 2, :side // 2].sum() / q.sum(), rel=1e-6)  # q is float32
        feats = {n: features(m, images[0]) for n, m in models.items()}
        assert a.loc[layer, "at_distance"] == pytest.approx(
            float(at_term(feats["baseline"][layer], feats[TEACHER][layer])), rel=1e-4)
    focus = lesion_focus_table(scores)
    assert list(focus.index) == [TEACHER, "baseline", UNIFORM] and list(focus.columns) == list(LAYERS)
    assert (focus.loc[UNIFORM] == 0.25).all()
    assert lesion_focus_table(image_scores(["b"], {k: {l: v[1:] for l, v in m.items()} for k, m in maps.items()},
                                           [None])).empty


def test_lesion_focus_figure(tmp_path) -> None:
    focus = pd.DataFrame([[0.3, 0.5], [0.2, 0.25], [0.25, 0.25]], index=[TEACHER, "baseline", UNIFORM],
                         columns=["layer3", "layer4"])
    png = lesion_focus_plot(focus, tmp_path / "f.png", reference=UNIFORM)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(ValueError, match="empty"):
        lesion_focus_plot(focus.loc[[UNIFORM]], tmp_path / "g.png", reference=UNIFORM)
