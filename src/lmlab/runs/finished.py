"""A job that already ran to the end is reused, not repeated: rerunning the same command (a sweep relaunched, a
study rerun) must not train again and be counted twice. The job records its config, the fingerprints of what it read
(its data, its starting run) and its final metrics when it finishes; a rerun with the same config on the same inputs
returns those metrics and writes nothing, and one whose inputs changed runs again."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from lmlab.atomic_file import write_text_atomic
from lmlab.runs.config_drift import RUN_CONTROL
from lmlab.tracking.identity import flatten

FINISHED_FILE = "finished.json"


def finished_metrics(run_dir: Path, resolved: dict[str, Any], inputs: dict[str, str]) -> dict[str, float] | None:
    """The final metrics of the job in `run_dir` when it finished with the config `resolved` on `inputs`; else
    None."""
    record = _record(run_dir)
    if record is None or record.get("config") != _identity(resolved) or record.get("inputs") != inputs:
        return None
    return {k: float(v) for k, v in record["metrics"].items()}


def finished_on_other_inputs(run_dir: Path, resolved: dict[str, Any], inputs: dict[str, str]) -> bool:
    """Whether the job in `run_dir` finished with the config `resolved` but on other inputs (an edited data file):
    the same command is then a new job on the new data, not a continuation of the finished one."""
    record = _record(run_dir)
    return record is not None and record.get("config") == _identity(resolved) and record.get("inputs") != inputs


def _record(run_dir: Path) -> dict[str, Any] | None:
    path = run_dir / FINISHED_FILE
    if not path.is_file():
        return None
    try:
        return dict(json.loads(path.read_text()))
    except ValueError:
        return None  # a record that cannot be read proves nothing: the job runs again


def record_finished(run_dir: Path, resolved: dict[str, Any], inputs: dict[str, str], metrics: dict[str, float]) -> None:
    record = {"config": _identity(resolved), "inputs": inputs, "metrics": metrics}
    write_text_atomic(run_dir / FINISHED_FILE, json.dumps(record, indent=1))


def _identity(resolved: dict[str, Any]) -> dict[str, str]:
    return {k: v for k, v in flatten(resolved).items() if k not in RUN_CONTROL}
