"""Progress as log lines, for logs and Slurm jobs where a redrawn bar would write thousands of lines."""

from __future__ import annotations

import logging
import time
from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.callbacks import Callback

log = logging.getLogger("lmlab.progress")


class ProgressLines(Callback):
    """One line every `every` optimiser steps (and at the last): step, max steps, the logged train loss, speed."""

    def __init__(self, every: int) -> None:
        self.every = max(1, every)
        self._last: tuple[int, float] | None = None

    def on_train_batch_end(self, trainer: pl.Trainer, *args: Any) -> None:
        step = trainer.global_step
        if step % self.every and step < trainer.max_steps:
            return
        if self._last is not None and self._last[0] == step:
            return  # a step that accumulates gradients over several batches ends once
        now = time.monotonic()
        speed = ""
        if self._last is not None and now > self._last[1]:
            speed = f" | {(step - self._last[0]) / (now - self._last[1]):.1f} steps/s"
        loss = trainer.callback_metrics.get("train/loss")
        shown = "" if loss is None else f" | train/loss {float(loss):.4g}"
        log.info("step %d/%d%s%s", step, trainer.max_steps, shown, speed)
        self._last = (step, now)
