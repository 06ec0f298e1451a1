"""Runs a study's stage calls as the user would (`python train.py -m ...` through the study's launcher), skipping
every job whose run already finished with the same overrides, and says which jobs failed and where their logs are."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from mlflow.tracking import MlflowClient

from lmlab.errors import InputError
from lmlab.studies.plan import Job, StageCall
from lmlab.tracking.mlflow_run import RUN_FILE

log = logging.getLogger(__name__)


class StudyIncomplete(InputError):
    """Some job of a stage did not finish; rerunning the study continues from there."""


def finished(job: Job, client: MlflowClient | None) -> bool:
    """Whether `job` already ran to the end with the overrides it has now (its MLflow run FINISHED)."""
    run_file = job.directory / RUN_FILE
    if job.recorded_overrides() != job.overrides or not run_file.is_file():
        return False
    if client is None:
        return (job.directory / "export").is_dir()
    run_id = json.loads(run_file.read_text())["run_id"]
    return client.get_run(run_id).info.status == "FINISHED"


def run_stage(
    calls: list[StageCall],
    scripts: Path,
    root: Path,
    launcher: list[str],
    parallel: bool,
    log_dir: Path,
    client: MlflowClient | None,
) -> None:
    """Run the jobs of `calls` that have not finished (all calls at once when `parallel`) with the entry points in
    `scripts`, from the project root `root`; then check that each finished."""
    todo = []
    for call in calls:
        jobs = tuple(job for job in call.jobs if not finished(job, client))
        skipped = len(call.jobs) - len(jobs)
        if skipped:
            log.info("%s: %d of %d runs already finished", call.label, skipped, len(call.jobs))
        if jobs:
            todo.append((call, jobs))
    log_dir.mkdir(parents=True, exist_ok=True)

    def run(item: tuple[StageCall, tuple[Job, ...]]) -> int:
        call, jobs = item
        for job in jobs:
            job.record()
        script, *args = call.argv(jobs, launcher)
        argv = [sys.executable, str(scripts / script), *args]
        log_file = log_dir / f"{call.label.replace(' ', '_')}.log"
        log.info("%s: %d run(s) -> %s", call.label, len(jobs), log_file)
        with log_file.open("a") as out:
            out.write(f"$ {' '.join(argv)}\n")
            out.flush()
            done = subprocess.run(argv, cwd=root, stdout=out, stderr=subprocess.STDOUT, env=dict(os.environ))
        return done.returncode

    if parallel and len(todo) > 1:
        with ThreadPoolExecutor(max_workers=len(todo)) as pool:
            codes = list(pool.map(run, todo))
    else:
        codes = [run(item) for item in todo]
    failed = [
        f"{call.label} (exit {code}, log {log_dir / (call.label.replace(' ', '_') + '.log')})"
        for (call, jobs), code in zip(todo, codes, strict=True)
        if code != 0 or not all(finished(job, client) for job in jobs)
    ]
    if failed:
        raise StudyIncomplete(
            "these study runs did not finish: " + "; ".join(failed) + ". Fix the cause and rerun the same study "
            "command: finished runs are kept"
        )
