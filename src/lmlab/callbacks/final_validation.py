"""Validate after the last training step, whether or not it falls on `val_check_interval`."""

from __future__ import annotations

from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.callbacks import Callback


class ValidateOnLastStep(Callback):
    """Asking the trainer to stop on the last step makes Lightning run its validation check then, so every
    run ends with final validation metrics and a `best` checkpoint that reflects the final weights."""

    def on_train_batch_end(self, trainer: pl.Trainer, *args: Any) -> None:
        if trainer.max_steps > 0 and trainer.global_step >= trainer.max_steps:
            trainer.should_stop = True
