"""Stopping cleanly when the cluster says so: SIGTERM (Slurm's time limit, `scancel`, a container stop) and SIGUSR2
(submitit's preemption signal) only set a flag; the training loop sees it after the current batch, saves
`last.ckpt` from the normal checkpoint path and stops. Nothing is written inside the signal handler.

It stops by raising `StoppedOnSignal` rather than through `trainer.should_stop`, which would run one more
validation and let the checkpoint callbacks overwrite `last.ckpt` after it: the saved state must be the one at
the end of the batch, where an uninterrupted run would continue.

Under a job manager that handles these signals itself (submitit: USR2 = checkpoint the job and `scontrol requeue`
it), its handler runs after the run has saved and recorded the stop (`hand_over`), and the process then exits with
128 + the signal, so the manager never records the job as completed."""

from __future__ import annotations

import logging
import signal
import threading
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.callbacks import Callback

from lmlab.callbacks.lightning_internals import log_batch_metrics_now

log = logging.getLogger(__name__)

STOP_SIGNALS = (signal.SIGTERM, signal.SIGUSR2)


def signal_name(signum: int) -> str:
    return signal.Signals(signum).name


class StoppedOnSignal(Exception):
    def __init__(self, signals: list[int], step: int) -> None:
        names = "+".join(map(signal_name, signals)) or "a signal to another rank"
        super().__init__(f"stopped on {names} at step {step}")
        self.signals = signals
        self.step = step


class StopOnSignal(Callback):
    def __init__(self, last_checkpoint: Path) -> None:
        self.last_checkpoint = Path(last_checkpoint)
        self.received: list[int] = []
        self._previous: dict[int, Any] = {}
        # The handlers of whoever runs this process, taken before Lightning installs its own.
        in_main = threading.current_thread() is threading.main_thread()
        self._owner: dict[int, Any] = {s: signal.getsignal(s) for s in STOP_SIGNALS} if in_main else {}

    def _flag(self, signum: int, frame: Any) -> None:
        if signum not in self.received:
            self.received.append(signum)

    def hand_over(self, stopped: StoppedOnSignal) -> None:
        """Once the stop is saved and recorded: run the owner's handler for each received signal (submitit's USR2
        handler requeues the job and exits) and exit with 128 + the first signal. Without an owner (a plain
        `python train.py` in a shell) this returns and the process ends normally."""
        owned = []
        for signum in stopped.signals:
            handler = self._owner.get(signum)
            if callable(handler) and handler is not signal.default_int_handler:
                owned.append((signum, handler))
        if not owned:
            return
        for signum, handler in owned:
            handler(signum, None)
        raise SystemExit(128 + stopped.signals[0])

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Installed after Lightning's own SIGTERM handler (which would raise SIGTERMException at the next batch
        start and exit without our checkpoint), replacing it for the training loop."""
        if threading.current_thread() is threading.main_thread():
            self._previous = {s: signal.signal(s, self._flag) for s in STOP_SIGNALS}

    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        """Put back what on_train_start replaced, unless Lightning's teardown (which may run first) already put
        back the handlers from before the Trainer: re-installing Lightning's would leave them behind."""
        for signum, handler in self._previous.items():
            if signal.getsignal(signum) == self._flag:
                signal.signal(signum, handler)
        self._previous = {}

    def on_train_batch_end(self, trainer: pl.Trainer, *args: Any) -> None:
        received = bool(self.received)
        if trainer.world_size > 1:
            # Every rank stops at the same batch when any rank got the signal (saving is a collective).
            received = trainer.strategy.reduce_boolean_decision(received, all=False)
        if not received:
            return
        log.warning(
            "Received %s: saving %s at step %d and stopping",
            "+".join(map(signal_name, self.received)) or "a stop signal on another rank",
            self.last_checkpoint,
            trainer.global_step,
        )
        trainer.save_checkpoint(self.last_checkpoint)
        log_batch_metrics_now(trainer)
        raise StoppedOnSignal(list(self.received), trainer.global_step)
