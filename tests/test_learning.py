"""Does anything learn?  One small pipeline run on the synthetic set, with tracking off.

The smoke profile trains too little to learn (it checks plumbing); this run is
sized to learn within a few minutes on 2 cores: SETTINGS below.  Its students
must beat chance (1/8 balanced accuracy) clearly on the held-out test split,
and its teacher's features must place images of one class closer together
than the untrained network's do.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import REPO_ROOT
from raytasks.evaluation import metrics
from raytasks.pipeline import PipelineResult, run_pipeline
from skin_core.config import load_config

# the module's one pipeline run (in the first test's setup) takes minutes on 2 cores: more than the default limit
pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]

# The smoke profile, grown until it learns (see the module docstring of each test for the measured figures).
SETTINGS = ["data.synthetic_n=1000", "teacher.epochs=3", "student.epochs=20", "student.at_beta=100",
            "partition.test_clusters=2", "tracking.enabled=false"]
# chance is 1/8 = 0.125, and a student that answers one class gets exactly that. Measured on 2 cores, two runs
# (2026-12-03): baseline 0.30+ and 0.341, AT layer3 0.245 and 0.400 on the test split (the runs are not
# bit-reproducible across thread schedules). Broken on purpose the same day (labels shuffled in the training
# step) the baseline reached 0.135 and this test failed. 0.2 sits below every measured run and well above chance.
BALANCED_ACCURACY_BOUND = {"baseline": 0.2, "AT layer3": 0.2}


@pytest.fixture(scope="module")
def learned(ray_local: None, tmp_path_factory: pytest.TempPathFactory) -> tuple[PipelineResult, Path, Path]:
    """The run, with a tracking URI in the environment that tracking off must ignore; (result, out, that db)."""
    root = tmp_path_factory.mktemp("learning")
    ignored = root / "ignored.db"
    config = load_config(REPO_ROOT / "jobs" / "configs" / "smoke.yaml", [f"out={root / 'run'}", *SETTINGS])
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{ignored}")
        patch.chdir(root)  # where MLflow would put a default ./mlruns
        result = run_pipeline(config)
    return result, root, ignored


def test_baseline_and_attention_transfer_students_beat_chance_on_the_test_split(
        learned: tuple[PipelineResult, Path, Path]) -> None:
    """Bound: BALANCED_ACCURACY_BOUND, chosen from measured runs (figures in the commit that set it)."""
    result, _, _ = learned
    test = metrics(result.evaluation)["test"]
    for model, bound in BALANCED_ACCURACY_BOUND.items():
        assert test[model]["balanced_accuracy"] >= bound, (model, test[model])


def test_the_trained_teacher_s_features_beat_the_untrained_network_s_by_k_nn(
        learned: tuple[PipelineResult, Path, Path]) -> None:
    """What a metric teacher is for: features in which images of one class lie closer together.

    The stage measures it itself, before training and after (k-NN with k = 20, cosine, on a lesion hold-out:
    ``TeacherSummary``).  Measured in two runs on 2 cores (2026-12-03): k-NN balanced accuracy 0.215 before,
    0.256 and 0.247 after; k-NN accuracy 0.543 before, 0.594 after in both.  A teacher whose training does
    not change its features keeps the "before" figures and fails.

    This test used to compare the clusters' NMI with the generator's label factor against k-means on the
    untrained features.  At this budget (3 teacher epochs) that comparison is a coin flip: 0.108 and 0.099
    after training against 0.113 before in the same two runs (it had passed in earlier ones), and a teacher
    whose training step was skipped on purpose scored 0.125: it could not tell a working teacher from a broken
    one.  That broken teacher fails this test (k-NN balanced accuracy 0.2146 after = 0.2146 before).
    """
    teacher = learned[0].teacher.summary
    assert teacher.knn_balanced_accuracy > teacher.knn_init_balanced_accuracy, teacher
    assert teacher.knn_accuracy > teacher.knn_init_accuracy, teacher


def test_tracking_off_tracks_nothing(learned: tuple[PipelineResult, Path, Path]) -> None:
    result, root, ignored = learned
    assert result.mlflow_run == "" and result.registered == ""
    assert "tracking off (tracking.enabled=false)" in result.report
    assert not ignored.exists() and not (root / "mlruns").exists()
    assert not [p for p in root.rglob("mlflow.db")] and not [p for p in root.rglob("mlartifacts")]
    assert all(stage.run_id == "" for stage in result.stages)
