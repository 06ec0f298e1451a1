"""Stopping cleanly when the cluster says so: SIGTERM (Slurm's time limit, `scancel`, a container stop) and SIGUSR2
(submitit's preemption signal) only set a flag; the training loop sees it after the current batch, saves
`last.ckpt` from the normal checkpoint path and stops. Nothing is written inside the signal handler.

It stops by raising `StoppedOnSignal` rather than through `trainer.should_stop`, which would run one more
validation and let the checkpoint callbacks overwrite `last.ckpt` after it: the saved state must be the one at
the end of the batch, where an uninterrupted run would continue."""

from __future__ import annotations

import logging
import signal
import threading
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.callbacks import Callback

log = logging.getLogger(__name__)

STOP_SIGNALS = (signal.SIGTERM, signal.SIGUSR2)


class StoppedOnSignal(Exception):
    def __init__(self, signum: int, step: int) -> None:
        super().__init__(f"stopped on {signal.Signals(signum).name} at step {step}")
        self.signum = signum
        self.step = step


class StopOnSignal(Callback):
    def __init__(self, last_checkpoint: Path) -> None:
        self.last_checkpoint = Path(last_checkpoint)
        self.received: int | None = None
        self._previous: dict[int, Any] = {}

    def _flag(self, signum: int, frame: Any) -> None:
        self.received = signum

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Installed after Lightning's own SIGTERM handler (which would raise SIGTERMException at the next batch
        start and exit without our checkpoint), replacing it for the training loop."""
        if threading.current_thread() is threading.main_thread():
            self._previous = {s: signal.signal(s, self._flag) for s in STOP_SIGNALS}

    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous = {}

    def on_train_batch_end(self, trainer: pl.Trainer, *args: Any) -> None:
        if self.received is None:
            return
        log.warning(
            "Received %s: saving %s at step %d and stopping",
            signal.Signals(self.received).name,
            self.last_checkpoint,
            trainer.global_step,
        )
        trainer.save_checkpoint(self.last_checkpoint)
        # Lightning logs a batch's metrics only after every on_train_batch_end hook: log them before stopping.
        trainer._logger_connector.on_batch_end()
        trainer._logger_connector.update_train_step_metrics()
        raise StoppedOnSignal(self.received, trainer.global_step)
