"""A resumed run must be the run that was started: its resolved config is recorded when it starts, and a resume
whose config differs is refused (naming every difference) unless `allow_config_change=true`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from lmlab.atomic_file import write_text_atomic
from lmlab.errors import InputError
from lmlab.tracking.identity import flatten

CONFIG_FILE = "run_config.json"
# Settings that steer how a job runs, not what it computes.
RUN_CONTROL = (
    "resume",
    "ckpt_path",
    "allow_config_change",
    "trainer.enable_progress_bar",
    "data.num_workers",
    "logger.parent_run_id",
)
# Prefixes of settings that label a run without changing it.
_LABELS = ("logger.tags.",)


def record_config(run_dir: Path, resolved: dict[str, Any]) -> None:
    write_text_atomic(run_dir / CONFIG_FILE, json.dumps(_computed(resolved), indent=1, sort_keys=True))


def config_changes(run_dir: Path, resolved: dict[str, Any]) -> dict[str, list[str | None]]:
    """{key: [recorded value, new value]} for every setting that differs from the run's recorded config."""
    path = run_dir / CONFIG_FILE
    if not path.is_file():
        return {}
    recorded, now = json.loads(path.read_text()), _computed(resolved)
    return {
        key: [recorded.get(key), now.get(key)]
        for key in sorted(recorded.keys() | now.keys())
        if recorded.get(key) != now.get(key)
    }


def check_resume_config(run_dir: Path, resolved: dict[str, Any], allowed: bool) -> dict[str, list[str | None]]:
    changes = config_changes(run_dir, resolved)
    if changes and not allowed:
        listed = "; ".join(f"{key}: {old} -> {new}" for key, (old, new) in changes.items())
        raise InputError(
            f"{run_dir} holds a run started with a different config ({listed}). Resume it unchanged, pass "
            "allow_config_change=true to continue it with the new settings, or resume=false to start it afresh"
        )
    return changes


def _computed(resolved: dict[str, Any]) -> dict[str, str]:
    return {k: v for k, v in flatten(resolved).items() if k not in RUN_CONTROL and not k.startswith(_LABELS)}
