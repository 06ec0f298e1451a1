"""Runs a study's stage calls as the user would (`python train.py -m ...` through the study's launcher), skipping
every job whose run already finished with the same overrides, and says which jobs failed and where their logs are."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import IO

from mlflow.tracking import MlflowClient

from lmlab.child_env import child_environment
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


def stopped_by_signal(code: int) -> bool:
    """Whether a child's exit code says a signal ended it (-N from Python, 128+N from a shell)."""
    return code < 0 or code - 128 in (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1, signal.SIGUSR2, signal.SIGHUP)


class _Children:
    """The stage processes a study runs, and the signal that stopped the study: a SIGTERM or SIGINT to the study
    is passed on to every running job (each checkpoints and exits), and no further job starts."""

    def __init__(self) -> None:
        self.running: set[subprocess.Popen] = set()
        self.stopped_by: str | None = None
        self._lock = threading.RLock()  # the signal handler may run while the main thread holds it

    def run(self, argv: list[str], *, cwd: Path, stdout: IO[str]) -> int:
        with self._lock:
            if self.stopped_by is not None:
                return -signal.SIGTERM
            # Its own process group, so the signal reaches the job's launcher and the jobs it started.
            child = subprocess.Popen(
                argv, cwd=cwd, stdout=stdout, stderr=subprocess.STDOUT, env=child_environment(), start_new_session=True
            )
            self.running.add(child)
        try:
            return child.wait()
        finally:
            with self._lock:
                self.running.discard(child)

    def _forward(self, signum: int, frame: object) -> None:
        self.stopped_by = signal.Signals(signum).name
        log.warning("Study stopped by %s: passing it on to %d running job(s)", self.stopped_by, len(self.running))
        with self._lock:
            for child in self.running:
                with suppress(ProcessLookupError):
                    os.killpg(child.pid, signum)

    @contextmanager
    def forwarding_signals(self) -> Iterator[None]:
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        previous = {s: signal.signal(s, self._forward) for s in (signal.SIGTERM, signal.SIGINT)}
        try:
            yield
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)


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
    jobs_of = _Children()

    def run(item: tuple[StageCall, tuple[Job, ...]]) -> int | None:
        call, jobs = item
        if jobs_of.stopped_by is not None:
            return None  # not started: the study was stopped
        for job in jobs:
            job.record()
        script, *args = call.argv(jobs, launcher)
        argv = [sys.executable, str(scripts / script), *args]
        log_file = log_dir / f"{call.label.replace(' ', '_')}.log"
        log.info("%s: %d run(s) -> %s", call.label, len(jobs), log_file)
        with log_file.open("a") as out:
            out.write(f"$ {' '.join(argv)}\n")
            out.flush()
            return jobs_of.run(argv, cwd=root, stdout=out)

    with jobs_of.forwarding_signals():
        if parallel and len(todo) > 1:
            with ThreadPoolExecutor(max_workers=len(todo)) as pool:
                codes = list(pool.map(run, todo))
        else:
            codes = []
            for item in todo:
                codes.append(run(item))
                if codes[-1] is not None and stopped_by_signal(codes[-1]):
                    break  # a job stopped by a signal stops the study: the next stage call would not be wanted
            codes += [None] * (len(todo) - len(codes))
    stopped = jobs_of.stopped_by or next(
        (f"a job ended by a signal, exit {c}" for c in codes if c is not None and stopped_by_signal(c)), None
    )
    if stopped is not None:
        unfinished = [call.label for (call, jobs), code in zip(todo, codes, strict=True) if code != 0]
        raise StudyIncomplete(
            f"the study was stopped ({stopped}) before these stage calls finished: {unfinished}. Each stopped job "
            "saved its checkpoint; rerun the same study command to continue: finished runs are kept"
        )
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
