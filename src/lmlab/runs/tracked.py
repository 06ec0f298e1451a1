"""Opening a stage's MLflow run: the tags every run carries (code version, command, overrides, run dir, sweep,
Slurm job) plus the stage's own, and the flattened config as params."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lmlab.runs.config import LoggerConfig
from lmlab.tracking.identity import flatten, job_tags
from lmlab.tracking.mlflow_run import MlflowRun, open_run


def track_run(
    logger: LoggerConfig,
    root: Path,
    run_dir: Path,
    run_name: str,
    tags: dict[str, str],
    resolved: dict[str, Any],
    resume_tags: dict[str, str] | None = None,
) -> MlflowRun | None:
    """The run's MLflow run (continued when `resume_tags` is given), or None when the logger is not MLflow."""
    if logger.kind != "mlflow":
        return None
    return open_run(
        tracking_uri=logger.tracking_uri,
        experiment=logger.experiment,
        artifact_location=logger.artifact_location,
        run_dir=run_dir,
        run_name=run_name,
        tags={**job_tags(root, run_dir), **tags},
        params=flatten(resolved),
        resume=resume_tags is not None,
        resume_tags=resume_tags,
    )
