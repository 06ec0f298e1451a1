"""What a run prints: its own progress and results, not the libraries' product tips and known-harmless warnings.

On a terminal the progress is Lightning's live bar; in a log file or a Slurm job (stdout not a TTY) it is one line
every `trainer.log_every_n_steps` steps (`lmlab.callbacks.progress.ProgressLines`). Every run ends with a summary
that says where its results are and how to open them."""

from __future__ import annotations

import logging
import sys
import warnings
from collections.abc import Mapping
from pathlib import Path

from lmlab.tracking.identity import redact
from lmlab.tracking.mlflow_run import MlflowRun

log = logging.getLogger(__name__)

# (logger, message start) of lines that advertise products or say nothing about the run
_NOISE = {
    "pytorch_lightning.utilities.rank_zero": ("💡 Tip",),
    "lightning.pytorch.utilities.rank_zero": ("💡 Tip",),
}
# Warnings about code outside lmlab that the user can do nothing about.
_HARMLESS_WARNINGS = (
    r"`isinstance\(treespec, LeafSpec\)` is deprecated",  # Lightning 2.6 on torch 2.13's pytree
    r"The `srun` command is available on your system but is not used",  # Slurm installed, run outside a job
)


class _DropLines(logging.Filter):
    def __init__(self, starts: tuple[str, ...]) -> None:
        super().__init__()
        self.starts = starts

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(self.starts)


def quiet_libraries() -> None:
    """Drop the libraries' tips and known-harmless warnings (idempotent)."""
    for name, starts in _NOISE.items():
        logger = logging.getLogger(name)
        if not any(isinstance(f, _DropLines) for f in logger.filters):
            logger.addFilter(_DropLines(starts))
    for message in _HARMLESS_WARNINGS:
        warnings.filterwarnings("ignore", message=message)
    for name in ("mlflow.store.db.utils", "alembic.runtime.migration"):  # "Creating initial MLflow database tables"
        logging.getLogger(name).setLevel(logging.WARNING)


def live_progress() -> bool:
    """Whether a live progress bar can be drawn: only on a terminal."""
    return sys.stdout.isatty()


def closing_summary(
    run_dir: Path, metrics: Mapping[str, float], tracked: MlflowRun | None, root: Path, step: int | None = None
) -> str:
    """Where a finished run's results are and how to look at them, in a few lines."""
    shown = ", ".join(f"{k}={v:.4g}" for k, v in sorted(metrics.items()) if k.startswith(("val/", "test/")))
    lines = [f"Finished{'' if step is None else f' at step {step}'}: {shown or 'no validation metrics'}"]
    lines.append(f"  output dir: {run_dir}")
    if (run_dir / "export").is_dir():
        lines.append(f"  export:     {run_dir / 'export'}")
    if tracked is not None:
        uri = redact(tracked.tracking_uri)
        lines.append(f"  MLflow run: {tracked.run_id} in {uri}")
        if uri == f"sqlite:///{root.resolve()}/mlflow.db" and (root / "Makefile").is_file():
            lines.append("  open it:    make ui  (then http://127.0.0.1:5000), or:")
        lines.append(f"              mlflow ui --backend-store-uri '{uri}' --host 127.0.0.1")
    return "\n".join(lines)
