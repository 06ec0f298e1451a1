"""An objective study end to end at toy size: the study pretrains, fine-tunes every run and the scratch baseline over
seeds, and writes its report from MLflow; killed midway and rerun, it reuses every run that finished."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from lmlab.errors import InputError
from lmlab.studies.config import StudySettings
from lmlab.studies.run import forwarded_overrides, launcher_overrides, refuse_optimiser_overrides

from .conftest import ROOT, TINY, run_env

TOY_STUDY = [
    "+study=objectives_synthetic",
    "study.name=toy",
    "study.objectives=[mlm,clm,none]",
    "study.tasks=[{name: topics, task: synthetic_topic_snippets, train_examples: 120, validation_examples: 40}]",
    "study.seeds=2",
    "study.steps=30",
    "study.pretrain=['trainer.val_check_interval=10','trainer.limit_val_batches=4','optim.warmup_steps=5']",
    "study.finetune=['trainer.max_steps=20','trainer.val_check_interval=10','optim.warmup_steps=5']",
    *(o for o in TINY if o.startswith(("model.", "data."))),
]


def test_study_settings_are_checked_before_anything_runs():
    with pytest.raises(InputError, match="study.objectives='bert' is not supported"):
        StudySettings(objectives=["bert"], tasks=[{"name": "a", "task": "b"}]).validate()
    with pytest.raises(InputError, match=r"study.tasks\[0\].*needs name and task"):
        StudySettings(tasks=[{"name": "a"}]).validate()
    with pytest.raises(InputError, match="study.pretrain entry 'model.n_layers=2': the study sets this itself"):
        StudySettings(tasks=[{"name": "a", "task": "b"}], pretrain=["model.n_layers=2"]).validate()
    with pytest.raises(InputError, match="study.reference='clm' must be one of the pretrained objectives"):
        StudySettings(
            objectives=["mlm", "none"], tasks=[{"name": "a", "task": "b"}], budget="flops", reference="clm"
        ).validate()


def test_the_study_forwards_its_model_and_data_as_composed_and_the_launcher_as_written(compose_config):
    cfg = compose_config("data=text", "data.files=[a b.txt]", "model.n_layers=2")
    forwarded = forwarded_overrides(cfg, {"model": "tiny", "data": "text"})
    assert forwarded[0] == "model=tiny" and "data=text" in forwarded
    assert "model.n_layers=2" in forwarded and "data.files=['a b.txt']" in forwarded
    assert "data.tokenizer.kind='wordpiece'" in forwarded and "data.max_documents=null" in forwarded
    with pytest.raises(InputError, match="optim.lr=1e-3: a study's stages have their own optimiser settings"):
        refuse_optimiser_overrides(["optim.lr=1e-3"])
    hydra = ["hydra/launcher=slurm", "hydra.launcher.cpus_per_task=1", "hydra.run.dir=x"]
    assert launcher_overrides(hydra) == ["hydra/launcher=slurm", "hydra.launcher.cpus_per_task=1"]


def _runs(root: Path) -> list:
    client = MlflowClient(f"sqlite:///{root}/mlflow.db")
    experiment = client.get_experiment_by_name("lmlab")
    return client.search_runs([experiment.experiment_id], max_results=1000) if experiment else []


@pytest.mark.slow
def test_a_killed_study_reruns_only_what_did_not_finish_and_reports(tmp_path):
    (tmp_path / "experiments").mkdir()  # the report's home: a directory of this project, not the repo's
    (tmp_path / "experiments" / "preset").symlink_to(ROOT / "experiments" / "preset")
    env = run_env(tmp_path)
    command = [sys.executable, "study.py", *TOY_STUDY]
    first = subprocess.Popen(
        command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True
    )
    study_dir = tmp_path / "outputs" / "studies" / "toy"
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline and first.poll() is None:
        if (study_dir / "finetune" / "topics" / "mlm").is_dir():  # pretraining finished, fine-tuning started
            break
        time.sleep(0.2)
    assert first.poll() is None, first.communicate()[1][-3000:]
    os.killpg(first.pid, signal.SIGKILL)  # the study and the stage job it runs, with no chance to clean up
    first.communicate(timeout=120)
    pretraining = {r.info.run_id: r.info.start_time for r in _runs(tmp_path) if "lmlab.study_task" not in r.data.tags}

    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-4000:]
    assert "pretrain mlm: 1 of 1 runs already finished" in done.stdout + done.stderr

    runs = _runs(tmp_path)
    [study] = [r for r in runs if r.data.tags.get("lmlab.kind") == "study"]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == study.info.run_id]
    assert study.info.status == "FINISHED"
    stages = {
        (r.data.tags.get("lmlab.study_task"), r.data.tags["lmlab.study_objective"], r.data.params["seed"])
        for r in children
    }
    assert stages == {(None, "mlm", "0"), (None, "clm", "0")} | {
        ("topics", o, str(s)) for o in ("mlm", "clm", "none") for s in (0, 1)
    }
    # Each pretraining run was trained once: the rerun found them finished and started none again.
    again = {r.info.run_id: r.info.start_time for r in children if "lmlab.study_task" not in r.data.tags}
    assert again == {k: v for k, v in pretraining.items() if k in again} and len(again) == 2
    report = (tmp_path / "experiments" / "studies" / "toy" / "report.md").read_text()
    assert "Equal tokens: every objective trains 30 optimiser steps" in report
    assert "### topics" in report and "Ranking:" in report and "vs scratch" in report and "last fifth" in report
    for png in ("pretraining_curves.png", "downstream.png"):
        assert (tmp_path / "experiments" / "studies" / "toy" / png).stat().st_size > 1000
    job = json.loads((study_dir / "pretrain" / "mlm" / "study_job.json").read_text())
    assert "objective=mlm" in job["overrides"]


_STAGE_JOB = """
import os, signal, sys, time
from pathlib import Path
out = Path(next(a.split("=", 1)[1] for a in sys.argv if a.startswith("hydra.sweep.dir=")))
out.mkdir(parents=True, exist_ok=True)
def checkpoint(signum, frame):
    (out / "checkpointed").write_text(signal.Signals(signum).name)
    signal.signal(signum, signal.SIG_DFL)
    os.kill(os.getpid(), signum)
signal.signal(signal.SIGTERM, checkpoint)
(out / "started").write_text("")
if os.environ.get("STOP_ITSELF"):
    os.kill(os.getpid(), signal.SIGTERM)
time.sleep(120)
"""


def _stage_calls(tmp_path: Path) -> list:
    from lmlab.studies.plan import Job, StageCall

    return [
        StageCall(
            "train.py", tmp_path / name, name, (), (Job(tmp_path / name / "job", ("x",), name),), f"pretrain {name}"
        )
        for name in ("first", "second")
    ]


@pytest.mark.parametrize("stopped_by", ["the study", "the job itself"])
def test_a_stopped_study_passes_the_stop_on_and_starts_nothing_more(tmp_path, monkeypatch, stopped_by):
    from lmlab.studies.launch import StudyIncomplete, run_stage

    (tmp_path / "train.py").write_text(_STAGE_JOB)
    if stopped_by == "the job itself":
        monkeypatch.setenv("STOP_ITSELF", "1")
    else:

        def stop_when_started() -> None:
            deadline = time.monotonic() + 120
            while not (tmp_path / "first" / "started").exists() and time.monotonic() < deadline:
                time.sleep(0.05)
            os.kill(os.getpid(), signal.SIGTERM)  # to the study (this process), as Slurm or a user would

        import threading

        threading.Thread(target=stop_when_started, daemon=True).start()
    with pytest.raises(StudyIncomplete, match=r"the study was stopped \(.*\) before these stage calls finished"):
        run_stage(_stage_calls(tmp_path), tmp_path, tmp_path, [], False, tmp_path / "logs", None)
    assert (tmp_path / "first" / "checkpointed").read_text() == "SIGTERM"  # the job got the stop and checkpointed
    assert not (tmp_path / "second").exists()  # and the study went on to nothing else
