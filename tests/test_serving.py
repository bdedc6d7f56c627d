"""The registered champion served by ``mlflow models serve`` on loopback, as a user serves it after a run."""

from __future__ import annotations

import base64
import math
import os
import sys
from pathlib import Path
from typing import Iterator

import pytest
import requests

from conftest import SHARED_DATA, _free_port, loopback_server, tiny_config
from raytasks.registry import Candidate, register_champion
from raytasks.tracking import tracked_run
from skin_core.classes import CLASSES
from skin_core.models import create_model
from skin_core.models.bundle import ModelCard, save_bundle

pytestmark = pytest.mark.slow

MODEL = "served-student"


def an_image(folder: Path) -> bytes:
    """A real ISIC image from ../shared where it is present, else one of the synthetic generator's."""
    sample = SHARED_DATA / "isic2019" / "sample" / "ISIC_2019_Training_Input"
    if sample.is_dir():
        return sorted(sample.glob("*.jpg"))[0].read_bytes()
    from skin_core.synth import generate_dataset

    generate_dataset(folder, n=8, size=64, seed=0)
    return sorted((folder / "ISIC_2019_Training_Input").glob("*.jpg"))[0].read_bytes()


def register_a_student(out: Path) -> str:
    """A freshly initialised smoke-profile student, registered with the champion alias the way a pipeline
    registers its best one; returns the tracking URI."""
    uri = f"sqlite:///{out / 'mlflow.db'}"
    config = tiny_config(str(out), tracking={"tracking_uri": uri, "registered_model": MODEL})
    folder = str(out / "student")
    save_bundle(folder, create_model(config.model, head="classifier", layers=()).state_dict(),
                ModelCard(config.model.arch, CLASSES, config.preprocess, "baseline"))
    with tracked_run(config, "pipeline", {}) as parent:
        with parent.nested("student:baseline") as student:
            pass
        assert register_champion(parent, config.tracking, [Candidate(student.run_id, folder, "key", 0.5)],
                                 "val_balanced_accuracy") == f"{MODEL}/1"
    return uri


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``mlflow models serve -m models:/NAME@champion --env-manager local`` on 127.0.0.1; yields its URL."""
    out = tmp_path_factory.mktemp("serving")
    # MLflow starts its scoring server as `uvicorn` from PATH: this environment's, as with an activated venv
    env = {**os.environ, "MLFLOW_TRACKING_URI": register_a_student(out),
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    port = _free_port()
    with loopback_server([sys.executable, "-m", "mlflow", "models", "serve", "-m", f"models:/{MODEL}@champion",
                          "--env-manager", "local", "--host", "127.0.0.1", "--port", str(port)], port,
                         out / "serve.log", timeout=240, env=env, cwd=out) as url:
        yield url


def invoke(url: str, images: list[bytes]) -> requests.Response:
    """A JSON request as a client sends one: encoded images, base64 in the ``image`` column."""
    rows = [[base64.b64encode(image).decode("ascii")] for image in images]
    return requests.post(f"{url}/invocations", json={"dataframe_split": {"columns": ["image"], "data": rows}},
                         timeout=120)


def test_the_served_champion_gives_eight_probabilities_for_an_image(served: str, tmp_path: Path) -> None:
    answer = invoke(served, [an_image(tmp_path)])
    assert answer.status_code == 200, answer.text[-2000:]
    (row,) = answer.json()["predictions"]
    assert row["error"] == ""
    probs = [row[c] for c in CLASSES]
    assert len(probs) == 8 and all(0 <= p <= 1 for p in probs) and math.isclose(sum(probs), 1.0, abs_tol=1e-4)


def test_a_corrupt_image_gets_its_own_error_and_the_others_are_still_predicted(served: str, tmp_path: Path) -> None:
    good = an_image(tmp_path)
    answer = invoke(served, [good, good[: len(good) // 3], b"not an image at all"])
    assert answer.status_code == 200, answer.text[-2000:]
    ok, truncated, garbage = answer.json()["predictions"]
    assert ok["error"] == "" and math.isclose(sum(ok[c] for c in CLASSES), 1.0, abs_tol=1e-4)
    for bad in (truncated, garbage):
        assert bad["error"] and all(bad[c] is None or math.isnan(bad[c]) for c in CLASSES)
