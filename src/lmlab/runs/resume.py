"""Where a rerun of a job continues: its checkpoints (the best by a validation metric, last.ckpt at every
validation), the checkpoint to resume from, and what a fresh start or a resume records in the run dir."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from pytorch_lightning.callbacks import ModelCheckpoint

from lmlab.callbacks.preemption import StopOnSignal, StoppedOnSignal, signal_name
from lmlab.runs.checkpoints import LAST, checkpoint_step, latest_checkpoint
from lmlab.runs.config_drift import record_config
from lmlab.tracking.mlflow_run import MlflowRun

log = logging.getLogger(__name__)


def checkpoint_callbacks(ckpt_dir: Path, monitor: str, mode: str) -> tuple[ModelCheckpoint, ModelCheckpoint]:
    """The best checkpoint by `monitor`, and last.ckpt at every validation.

    Two callbacks, because since Lightning 2.6 `save_last=True` writes last.ckpt only when a top-k checkpoint is
    saved at the same step: once the monitored metric stopped improving, a killed run would resume from its best
    step and a finished run would have no checkpoint of its final step."""
    # A resumed run owns the files already in its dir: overwrite rather than write *-v1.ckpt.
    best = ModelCheckpoint(
        dirpath=ckpt_dir,
        filename="best-step{step}",
        auto_insert_metric_name=False,
        monitor=monitor,
        mode=mode,
        save_top_k=1,
        save_on_train_epoch_end=False,
        enable_version_counter=False,
    )
    last = ModelCheckpoint(
        dirpath=ckpt_dir,
        filename=Path(LAST).stem,
        save_top_k=1,
        save_on_train_epoch_end=False,
        enable_version_counter=False,
    )
    return best, last


def resume_point(ckpt_path: str | None, resume: bool, ckpt_dir: Path) -> tuple[Path, int] | None:
    """The checkpoint to continue from: `ckpt_path` when given, else (resume=true) the run dir's newest complete
    checkpoint, else none."""
    if ckpt_path is not None:
        path = Path(ckpt_path)
        return path, checkpoint_step(path)
    return latest_checkpoint(ckpt_dir) if resume else None


def record_start(
    run_dir: Path, resolved: dict[str, Any], start: tuple[Path, int] | None, changes: dict
) -> dict[str, str] | None:
    """Record the config a run starts (or, changed, continues) with; the resume tags of a resumed run."""
    if start is None:
        archive_previous_checkpoints(run_dir / "checkpoints")
        record_config(run_dir, resolved)
        return None
    log.info("Resuming %s from %s (step %d)", run_dir, start[0], start[1])
    tags = {"lmlab.resumed_from_step": str(start[1]), "lmlab.resumed_from": start[0].name}
    if changes:
        tags["lmlab.resume_config_changes"] = json.dumps(changes)
        record_config(run_dir, resolved)  # later resumes compare against the settings it continues with
    return tags


def archive_previous_checkpoints(ckpt_dir: Path) -> None:
    """A fresh run never overwrites an earlier run's checkpoints: they move to checkpoints.N."""
    if not ckpt_dir.is_dir() or not any(ckpt_dir.iterdir()):
        return
    n = 1
    while ckpt_dir.with_name(f"{ckpt_dir.name}.{n}").exists():
        n += 1
    ckpt_dir.rename(ckpt_dir.with_name(f"{ckpt_dir.name}.{n}"))
    log.info("Moved the previous run's checkpoints to %s", ckpt_dir.with_name(f"{ckpt_dir.name}.{n}"))


def record_stop(tracked: MlflowRun | None, stop: StopOnSignal, stopped: StoppedOnSignal) -> None:
    """A run stopped by a signal (its last.ckpt already saved): the run is KILLED with where and why, and the
    signal goes on to whoever handled it before (Slurm's requeue, the default action)."""
    if tracked is not None:
        tracked.client.set_tag(tracked.run_id, "lmlab.stopped_at_step", str(stopped.step))
        tracked.client.set_tag(tracked.run_id, "lmlab.stopped_by", "+".join(map(signal_name, stopped.signals)))
        tracked.end("KILLED")
    log.warning("%s; rerun the same command to continue", stopped)
    stop.hand_over(stopped)
