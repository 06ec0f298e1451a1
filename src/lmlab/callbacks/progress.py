"""Progress as log lines, for logs and Slurm jobs where a redrawn bar would write thousands of lines."""

from __future__ import annotations

import logging
import time
from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.callbacks import Callback

log = logging.getLogger("lmlab.progress")


SHOWN = ("train/loss", "train/reward")  # whichever the run logs (an RL run's loss alone says little)


class ProgressLines(Callback):
    """One line every `every` optimiser steps (and at the last): step, max steps, the logged train loss (and an RL
    run's reward), speed. Written by rank 0 alone, whose values are the ones the run records."""

    def __init__(self, every: int) -> None:
        self.every = max(1, every)
        self._last: tuple[int, float] | None = None

    def on_train_batch_end(self, trainer: pl.Trainer, *args: Any) -> None:
        step = trainer.global_step
        if not trainer.is_global_zero or (step % self.every and step < trainer.max_steps):
            return
        if self._last is not None and self._last[0] == step:
            return  # a step that accumulates gradients over several batches ends once
        now = time.monotonic()
        speed = ""
        if self._last is not None and now > self._last[1]:
            speed = f" | {(step - self._last[0]) / (now - self._last[1]):.1f} steps/s"
        logged = trainer.callback_metrics
        shown = "".join(f" | {name} {float(logged[name]):.4g}" for name in SHOWN if name in logged)
        log.info("step %d/%d%s%s", step, trainer.max_steps, shown, speed)
        self._last = (step, now)
