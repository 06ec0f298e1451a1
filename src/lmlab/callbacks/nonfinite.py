"""A non-finite training loss stops the run with the reason, before any checkpoint callback can save the
poisoned weights as `last` or `best`: Lightning runs checkpoint callbacks after all others."""

from __future__ import annotations

import math
from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.callbacks import Callback


class NonFiniteLossError(FloatingPointError):
    pass


def check_finite(loss: Any, step: int) -> None:
    """Raise NonFiniteLossError, naming the step and what to change, if the loss is NaN or infinite."""
    if not math.isfinite(float(loss)):
        raise NonFiniteLossError(
            f"the training loss is {float(loss)} at step {step}; stopping without saving these weights (the "
            "checkpoints hold the last finite state — lower optim.lr or raise trainer.gradient_clip_val, then rerun "
            "to resume from them)"
        )


class StopOnNonFiniteLoss(Callback):
    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, *args: Any) -> None:
        loss = outputs.get("loss") if isinstance(outputs, dict) else outputs
        if loss is not None:
            check_finite(loss, trainer.global_step)
