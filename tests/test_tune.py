"""The Tune sweep: a checked search space, Optuna's TPE, trials ranked on one fixed hold-out, clean ends, resume."""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pandas as pd
import pytest
from mlflow import MlflowClient
from ray.tune.search import BasicVariantGenerator, ConcurrencyLimiter
from ray.tune.search.optuna import OptunaSearch

from conftest import REPO_ROOT, run_folder, tiny_config
from raytasks.partition import PartitionSummary, splits
from raytasks.pipeline import PipelineResult
from raytasks.preprocess import PreprocessSummary, read_table
from raytasks.settings import PROFILE_DIRS
from raytasks.stages import load_output
from raytasks.student import HISTORY, StudentSummary, rows_hash
from raytasks.teacher import TeacherSummary
from raytasks.tune import chosen_config, pipeline_command, run_tune, search_algorithm, search_space, sweep_path
from skin_cli.main import main
from skin_core import storage
from skin_core.classes import CLASSES
from skin_core.config import ConfigError, PipelineConfig, TuneConfig, load_config, profile_path, to_dict
from skin_core.partitioning.clusters import ranking_holdout
from skin_core.search_space import DataFacts, checked_space, data_facts

SMOKE = REPO_ROOT / "jobs" / "configs" / "smoke.yaml"
POINT = {"ms_alpha": 4.0, "ms_beta": 20.0, "ms_base": 0.5, "miner_epsilon": 0.1, "clusters": 4, "at_beta": 500.0,
         "variant": "layer2", "lr": 0.005}


def smoke(out: Path, *overrides: str) -> PipelineConfig:
    return load_config(SMOKE, [f"out={out}", *overrides])


# ---------------------------------------------------------------- the space, before anything runs


def test_an_impossible_space_is_refused_in_one_line_before_anything_runs(tmp_path: Path) -> None:
    out = tmp_path / "sweep"
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "skin_cli", "tune", "--profile", "smoke", "--out", str(out),
                           "--set", "tune.layers=[layer4, layer3, layer3+layer4]", "--set", "tune.clusters=[1, 8]",
                           "--set", "tune.lr=[0.1, 0.01]"], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": str(REPO_ROOT)})
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr[-3000:]
    assert lines[-1].startswith("skin tune: error: impossible values in the search space"), lines[-1]
    for listed in ("tune.layers layer4, layer3+layer4 (a 1×1 feature map at 32 px)",
                   "tune.clusters 1 (not above partition.test_clusters=1)", "tune.lr [0.1, 0.01]"):
        assert listed in lines[-1]
    assert "layer3," not in lines[-1].split("tune.layers", 1)[1].split("(")[0]  # the possible set is not listed
    assert not out.exists()  # no data, no MLflow run, no Ray: nothing ran
    print(f"refused in {time.monotonic() - started:.1f} s")


def test_drop_invalid_keeps_the_possible_values_and_logs_the_rest(tmp_path: Path,
                                                                   caplog: pytest.LogCaptureFixture) -> None:
    config = smoke(tmp_path, "tune.drop_invalid=true", "tune.layers=[]", "tune.clusters=[1, 4, 200]",
                   "tune.at_beta=[-5, 1000]")
    kept = checked_space(config, DataFacts(images=120, lesions_outside_holdout={c: 3 for c in CLASSES}))
    assert kept.tune.layers == ("layer1", "layer2", "layer3", "layer1+layer2", "layer1+layer3", "layer2+layer3",
                                "layer1+layer2+layer3")  # of the 15 sets, those without layer4 at 32 px
    assert kept.tune.clusters == (4,) and kept.tune.at_beta == (1000.0,)
    assert "more clusters than the 120 images" in caplog.text and "dropped" in caplog.text


def test_dropping_cannot_empty_a_list_or_repair_bounds_and_data(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"nothing valid is left in tune.layers"):
        checked_space(smoke(tmp_path, "tune.drop_invalid=true", "tune.layers=[layer4, layer1+layer4]"))
    with pytest.raises(ConfigError, match=r"tune.lr \[0.0, 0.1\] \(needs 0 < low <= high\)$"):
        checked_space(smoke(tmp_path, "tune.drop_invalid=true", "tune.lr=[0, 0.1]"))
    facts = DataFacts(images=50, lesions_outside_holdout={"MEL": 5, "NV": 9})
    with pytest.raises(ConfigError, match=r"data BCC, AK, BKL, DF, VASC, SCC \(0 lesion\(s\) outside the ranking"):
        checked_space(smoke(tmp_path), facts)


def test_data_facts_count_the_lesions_left_outside_the_ranking_holdout() -> None:
    frame = pd.DataFrame({"image_id": [f"i{n}" for n in range(60)], "lesion_id": [f"L{n // 2}" for n in range(60)],
                          "label": ["NV"] * 40 + ["DF"] * 6 + ["MEL"] * 14})
    facts = data_facts(frame, 0.5)
    held = ranking_holdout(frame, 0.5)
    assert facts.images == 60 and 0 < held.sum() < 60
    assert facts.lesions_outside_holdout["DF"] == 3  # a rare class keeps 3 lesions (the partition needs 2)
    assert sum(facts.lesions_outside_holdout.values()) == frame.loc[~held, "lesion_id"].nunique()


def test_search_is_seeded_tpe_behind_a_concurrency_limit_or_random() -> None:
    def algorithm(**tune):
        return search_algorithm(PipelineConfig(tune=TuneConfig(**tune)))

    tpe = algorithm(max_concurrent=2, seed=7)
    assert isinstance(tpe, ConcurrencyLimiter) and tpe.max_concurrent == 2
    assert isinstance(tpe.searcher, OptunaSearch) and tpe.searcher._seed == 7
    assert isinstance(algorithm(search="random"), BasicVariantGenerator)
    # Optuna takes no grid: a layer grid runs on the random search
    assert isinstance(algorithm(layers=("layer3", "layer4"), layers_grid=True), BasicVariantGenerator)
    # nor an empty space (Optuna raises on its first sample): every list of one value repeats that point
    one = algorithm(layers=("layer3",), clusters=(8,), ms_alpha=(2.0,), ms_beta=(50.0,), ms_base=(1.0,),
                    at_beta=(1000.0,), lr=(0.01,))
    assert isinstance(one, BasicVariantGenerator)
    with pytest.raises(ConfigError, match="tune.search"):
        TuneConfig(search="grid")


def test_start_from_profile_makes_the_profile_the_first_trial(tmp_path: Path) -> None:
    config = checked_space(smoke(tmp_path, "tune.start_from_profile=true", "tune.clusters=[4]",
                                 "tune.at_beta=[500, 2000]", "tune.layers=[layer2]"))
    # the profile's K, β and variant join their lists (smoke: K 8, β 1000, layer3)
    assert config.tune.clusters == (4, 8) and config.tune.at_beta == (500.0, 2000.0, 1000.0)
    assert config.tune.layers == ("layer2", "layer3")
    tpe = search_algorithm(config).searcher
    tpe.set_search_properties("val_balanced_accuracy", "max", search_space(config.tune))
    assert tpe.suggest("first") == {"ms_alpha": 2.0, "ms_beta": 50.0, "ms_base": 1.0, "clusters": 8, "at_beta": 1000.0,
                                    "variant": "layer3", "lr": 0.01}
    with pytest.raises(ConfigError, match=r"tune.start_from_profile student.lr=0.01 \(outside tune.lr \[0.02, 0.1\]\)"):
        checked_space(smoke(tmp_path, "tune.start_from_profile=true", "tune.lr=[0.02, 0.1]"))
    with pytest.raises(ConfigError, match=r"tune.clusters 1 \(not above .*; the profile's own value\)"):
        checked_space(smoke(tmp_path, "tune.start_from_profile=true", "tune.drop_invalid=true", "teacher.clusters=1"))


def test_the_printed_pipeline_command_rebuilds_the_chosen_config(tmp_path: Path) -> None:
    base = smoke(tmp_path / "run", "teacher.epochs=2")  # an override of the user's own is carried too
    chosen = chosen_config(base, POINT)
    command = shlex.split(pipeline_command(chosen))
    assert command[:4] == ["skin", "pipeline", "--profile", "smoke"]
    overrides = command[5::2]
    rebuilt = load_config(profile_path("smoke", PROFILE_DIRS), overrides)
    assert to_dict(rebuilt) | {"tune": None} == to_dict(chosen) | {"tune": None}
    assert rebuilt.student.variants == ("baseline", "layer2") and rebuilt.partition.holdout_fraction == 0
    assert rebuilt.student.val_split == "val"  # the final evaluation is the paper's cluster partition


# ---------------------------------------------------------------- sweeps on Ray (smoke profile)


def published(out: Path, kind: str, summary: type) -> list:
    """Every stage of ``kind`` published under ``out`` (one folder per distinct input)."""
    return [load_output(str(folder), summary) for folder in sorted((out / kind).iterdir()) if folder.is_dir()]


@pytest.mark.slow
@pytest.mark.usefixtures("ray_local")
def test_optuna_trials_with_different_k_are_ranked_on_the_same_rows(tmp_path: Path) -> None:
    """Seeded TPE (seed 0) draws K = 8 then K = 4 here, each with its own learning rate: two teachers and two
    cluster partitions, one ranking hold-out.  (A teacher shared by two trials: the tracked sweep's test.)"""
    out = tmp_path / "sweep"
    config = tiny_config(str(out), tracking={"enabled": False})
    tune = replace(config.tune, num_samples=2, clusters=(4, 8), layers=("layer3",), ms_alpha=(2.0,), ms_beta=(50.0,),
                   ms_base=(1.0,), at_beta=(1000.0,), lr=(0.003, 0.03), search="optuna", seed=0,
                   grace_period=2)  # ASHA may not stop a trial before it publishes its student
    result = run_tune(replace(config, tune=tune))
    table = result.table
    assert len(table) == 2 and (table["status"] == "ok").all(), table.to_string()
    assert table["lr"].nunique() == 2 and table["clusters"].nunique() == 2  # TPE's draws: two teachers, ...
    assert len(published(out, "teacher", TeacherSummary)) == 2
    partitions = published(out, "partition", PartitionSummary)
    assert len(partitions) == 2  # ... two cluster partitions ...
    (preprocessed,) = published(out, "preprocessed", PreprocessSummary)
    rows = read_table(preprocessed, ["image_id", "lesion_id", "label"])
    held = set(rows.loc[ranking_holdout(rows, tune.rank_fraction), "image_id"])
    # ... and one set of ranking rows: what each trial reported, each student validated on, each partition reserved
    assert set(table["val_rows"]) == {rows_hash(list(held))}
    students = published(out, "student", StudentSummary)
    assert len(students) == 2 and {(s.summary.val_split, s.summary.val_rows) for s in students} == {
        ("holdout", rows_hash(list(held)))}
    for partition in partitions:  # reserved before the cluster split: no trial's student trained on them
        split = splits(partition)
        assert set(split.loc[split["split"] == "holdout", "image_id"]) == held
        assert not held & set(split.loc[split["split"].isin(["train", "val", "test"]), "image_id"])
    assert "skin pipeline --profile smoke" in result.note and f"{len(held)} images" in result.note
    assert result.mlflow_run == "" and result.registered == ""  # tracking off: no run, nothing registered
    assert not (out / "mlflow.db").exists()


@pytest.mark.slow
@pytest.mark.usefixtures("ray_local")
def test_a_sweep_whose_trials_all_fail_ends_in_one_line_and_a_failed_parent_run(
        tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "sweep"
    out.mkdir()
    (out / "teacher").write_text("not a folder")  # every trial's teacher stage fails on it: a real, late failure
    code = main(["tune", "--profile", "smoke", "--out", str(out), "--set", "tune.num_samples=2"])
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert code == 1
    assert last.startswith("skin tune: all 2 trials failed; each one's error is in ") and last.endswith("error.txt")
    client = MlflowClient(f"sqlite:///{out / 'mlflow.db'}")
    (parent,) = client.search_runs([client.get_experiment_by_name("skin-lesion").experiment_id],
                                   "tags.kind = 'sweep'")
    assert parent.info.status == "FAILED"
    trials = client.search_runs([parent.info.experiment_id], f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'")
    assert sorted(r.info.status for r in trials if "trial_name" in r.data.tags) == ["FAILED", "FAILED"]


def experiment_trials(path: Path) -> dict[str, str]:
    """Trial id → status in the newest experiment state Tune saved (what a restore would read)."""
    states = sorted(path.glob("experiment_state-*.json"))
    if not states:
        return {}
    try:
        data = json.loads(states[-1].read_text())
    except json.JSONDecodeError:  # caught mid-write
        return {}
    trials = [json.loads(state) for state, _ in data["trial_data"]]
    return {t["trial_id"]: t["status"] for t in trials}


def kill_session(proc: subprocess.Popen) -> None:
    """SIGKILL the driver's whole session (the driver, its local Ray, its trials), as a lost node would."""
    import psutil

    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=60)
    left = [p for p in psutil.process_iter() if _session(p) == proc.pid]
    for p in left:
        p.kill()
    psutil.wait_procs(left, timeout=30)


def _session(proc) -> int:
    try:
        return os.getsid(proc.pid)
    except OSError:
        return -1


# A sweep of the smoke profile's own teacher on a finished pipeline's output: the trials reuse its preprocessing
# and teacher, and only the students differ (two learning rates drawn by TPE).
ON_THE_PIPELINE = {"tune.num_samples": "2", "tune.layers": "[layer3]", "tune.clusters": "[8]",
                   "tune.ms_alpha": "[2.0]", "tune.ms_beta": "[50.0]", "tune.ms_base": "[1.0]",
                   "tune.at_beta": "[1000.0]", "tune.lr": "[0.003, 0.03]", "tune.grace_period": "2"}


@pytest.mark.slow
@pytest.mark.timeout(1500)
def test_skin_tune_on_a_pipeline_s_stages_resumes_after_its_driver_is_killed(tiny_run: PipelineResult,
                                                                             tmp_path: Path) -> None:
    """``skin tune`` as a user runs it (a subprocess with its own local Ray) on a finished pipeline's output,
    tracked in a store of its own (the pipeline's registry stays as it was).  The driver's whole session is
    killed after the first of two trials; the same command resumes the sweep without running that trial again,
    reopens and finishes the parent run, and ends with the summary: trials ranked on the ranking hold-out (so
    the best student is not the pipeline's, which validated on the cluster partition), the kept epoch's
    hold-out metric in the table, and the pipeline command that rebuilds the best trial."""
    out = run_folder(tiny_run)
    overrides = [f"{key}={value}" for key, value in {
        **ON_THE_PIPELINE, "tracking.tracking_uri": f"sqlite:///{tmp_path / 'sweep.db'}"}.items()]
    command = [sys.executable, "-m", "skin_cli", "tune", "--profile", "smoke", "--out", str(out),
               *(arg for override in overrides for arg in ("--set", override))]
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "MLFLOW_TRACKING_URI")}
    env["PYTHONPATH"] = str(REPO_ROOT)
    path = Path(sweep_path(checked_space(smoke(out, *overrides))))
    with (tmp_path / "first.log").open("w") as log:
        first = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        try:
            deadline = time.monotonic() + 900
            while "TERMINATED" not in experiment_trials(path).values():
                assert first.poll() is None, (tmp_path / "first.log").read_text()[-3000:]
                assert time.monotonic() < deadline, "no trial finished in 15 minutes"
                time.sleep(1)
        finally:
            kill_session(first)
    assert "preprocess: reusing" in (tmp_path / "first.log").read_text()
    finished = {t for t, status in experiment_trials(path).items() if status == "TERMINATED"}
    assert len(finished) == 1  # killed mid-sweep, after the first of two trials
    results = {t: _result_lines(path, t) for t in finished}

    again = subprocess.run(command, capture_output=True, text=True, env=env, timeout=1200)
    assert again.returncode == 0, (again.stdout + again.stderr)[-4000:]
    assert "resuming the sweep" in again.stderr
    assert "Failed to query Ray Train Controller" not in again.stderr  # quiet without the dashboard (runtime.py)
    final = experiment_trials(path)
    assert len(final) == 2 and set(final.values()) == {"TERMINATED"}
    assert {t: _result_lines(path, t) for t in finished} == results  # finished trials were not run again
    lines = again.stdout.splitlines()  # Ray Tune's own status lines come first; the summary table last
    start = max(i for i, line in enumerate(lines) if line.split()[:1] == ["trial"])
    header, *rows = lines[start:start + 3]
    assert sorted((row.split()[0], row.split()[-1]) for row in rows) == sorted((t, "ok") for t in final)
    best = next(line for line in lines if line.startswith("best student: "))
    folder, registered = best.removeprefix("best student: ").split("; registered as ")
    assert folder not in {s.folder for s in tiny_run.students}  # ranked on the hold-out, not the partition's val
    # the trials trained no teacher of their own: the pipeline's is the only one
    assert [d.name for d in (out / "teacher").iterdir() if d.is_dir()] == [Path(tiny_run.teacher.out).name]
    history = pd.read_csv(storage.join(folder, HISTORY))
    column = header.split().index("val_balanced_accuracy")
    assert max(float(row.split()[column]) for row in rows) == pytest.approx(
        history["val_balanced_accuracy"].max(), abs=1e-4)  # the table shows the kept epoch's figure
    assert "ranking hold-out" in again.stdout and "skin pipeline --profile smoke" in again.stdout
    client = MlflowClient(f"sqlite:///{tmp_path / 'sweep.db'}")
    (parent,) = client.search_runs([client.get_experiment_by_name("skin-lesion").experiment_id], "tags.kind = 'sweep'")
    assert parent.info.status == "FINISHED"  # the interrupted parent run was reopened and finished
    name, version = registered.split("/")
    assert str(client.get_model_version_by_alias(name, "champion").version) == version
    pipeline = MlflowClient(f"sqlite:///{out / 'mlflow.db'}")  # the pipeline's own store saw no sweep
    assert not pipeline.search_runs([pipeline.get_experiment_by_name("skin-lesion").experiment_id],
                                    "tags.kind = 'sweep'")


def _result_lines(path: Path, trial_id: str) -> int:
    """Results the trial reported (a trial run again would report more)."""
    (folder,) = [d for d in path.iterdir() if d.is_dir() and trial_id in d.name]
    return len((folder / "result.json").read_text().splitlines())
