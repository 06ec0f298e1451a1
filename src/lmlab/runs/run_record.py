"""Opening a stage's MLflow run: the tags every run carries (code version, command, overrides, run dir, sweep,
Slurm job) plus the stage's own, and the flattened config as params."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from lmlab.runs.config import LoggerConfig
from lmlab.runs.environment import environment_tags, frozen_packages
from lmlab.tracking.identity import flatten, job_tags
from lmlab.tracking.mlflow_run import MlflowRun, open_run

ENVIRONMENT_FILE = "environment.txt"


def logger_tags(logger: LoggerConfig) -> dict[str, str]:
    """The tags a run's logger config asks for: its parent run and its extra `lmlab.*` tags."""
    parent = {"mlflow.parentRunId": logger.parent_run_id} if logger.parent_run_id else {}
    return {**parent, **{f"lmlab.{key}": str(value) for key, value in logger.tags.items()}}


def track_run(
    logger: LoggerConfig,
    *,
    root: Path,
    run_dir: Path,
    run_name: str,
    tags: dict[str, str],
    resolved: dict[str, Any],
    resume_tags: dict[str, str] | None = None,
) -> MlflowRun | None:
    """The run's MLflow run (continued when `resume_tags` is given), or None when the logger is not MLflow. The
    environment is recorded with it: tags (`lmlab.env.*`, updated on every resume) and environment.txt."""
    if logger.kind != "mlflow":
        return None
    env = environment_tags()
    if resume_tags is not None:
        resume_tags = {**resume_tags, **env}
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / ENVIRONMENT_FILE).write_text(frozen_packages())
    tracked = open_run(
        tracking_uri=logger.tracking_uri,
        experiment=logger.experiment,
        artifact_location=logger.artifact_location,
        run_dir=run_dir,
        run_name=run_name,
        tags={**job_tags(root, run_dir), **env, **tags, **logger_tags(logger)},
        params=flatten(resolved),
        resume=resume_tags is not None,
        resume_tags=resume_tags,
    )
    tracked.client.log_artifact(tracked.run_id, str(run_dir / ENVIRONMENT_FILE))
    return tracked


@contextmanager
def failure_recorded(tracked: MlflowRun | None) -> Iterator[None]:
    """An error raised in the block marks the tracked run FAILED with the error's text, then propagates."""
    try:
        yield
    except Exception as err:
        if tracked is not None:
            tracked.fail(f"{type(err).__name__}: {err}")
        raise
