"""Tracking under load: eight processes writing runs, params and per-step metrics to one embedded SQLite store
at once (as a local parallel sweep does) lose nothing: a write that finds the store locked past its busy timeout
is kept and delivered later (tracking.buffered)."""

from __future__ import annotations

import multiprocessing
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

STEPS = 100


def _job(root: str, i: int) -> None:
    from lmlab.runs.trainer import TrackedRunLogger
    from lmlab.tracking.mlflow_run import open_run

    uri = f"sqlite:///{root}/mlflow.db"
    params = {f"param{j}": str(j) for j in range(50)}
    run = open_run(
        uri,
        experiment="lmlab",
        artifact_location="",
        run_dir=Path(root) / f"job{i}",
        run_name=f"job{i}",
        tags={"job": str(i)},
        params=params,
        resume=False,
    )
    logger = TrackedRunLogger(run, "lmlab")
    for step in range(STEPS):
        logger.log_metrics({"train/loss": float(i * 1000 + step), "lr": 0.1}, step)
    run.finish()


@pytest.mark.slow
def test_eight_concurrent_writers_to_sqlite_lose_nothing(tmp_path):
    context = multiprocessing.get_context("spawn")
    jobs = [context.Process(target=_job, args=(str(tmp_path), i)) for i in range(8)]
    for job in jobs:
        job.start()
    for job in jobs:
        job.join(timeout=300)
    assert [job.exitcode for job in jobs] == [0] * 8
    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    runs = client.search_runs([client.get_experiment_by_name("lmlab").experiment_id])
    assert len(runs) == 8 and {r.info.status for r in runs} == {"FINISHED"}
    for run in runs:
        i = int(run.data.tags["job"])
        history = sorted((m.step, m.value) for m in client.get_metric_history(run.info.run_id, "train/loss"))
        assert history == [(step, float(i * 1000 + step)) for step in range(STEPS)]
        assert len(run.data.params) == 50
