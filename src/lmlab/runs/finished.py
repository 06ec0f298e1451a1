"""A job that already ran to the end is reused, not repeated: rerunning the same command (a sweep relaunched, a
study rerun) must not train again and be counted twice. The job records its config and final metrics when it
finishes; a rerun with the same config returns those metrics and writes nothing."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from lmlab.atomic_file import write_text_atomic
from lmlab.runs.config_drift import RUN_CONTROL
from lmlab.tracking.identity import flatten

FINISHED_FILE = "finished.json"


def finished_metrics(run_dir: Path, resolved: dict[str, Any]) -> dict[str, float] | None:
    """The final metrics of the job in `run_dir` when it finished with the config `resolved`; else None."""
    path = run_dir / FINISHED_FILE
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text())
    except ValueError:
        return None  # a record that cannot be read proves nothing: the job runs again
    if record.get("config") != _identity(resolved):
        return None
    return {k: float(v) for k, v in record["metrics"].items()}


def record_finished(run_dir: Path, resolved: dict[str, Any], metrics: dict[str, float]) -> None:
    write_text_atomic(
        run_dir / FINISHED_FILE, json.dumps({"config": _identity(resolved), "metrics": metrics}, indent=1)
    )


def _identity(resolved: dict[str, Any]) -> dict[str, str]:
    return {k: v for k, v in flatten(resolved).items() if k not in RUN_CONTROL}
