"""Validation metrics are logged at the number of optimizer steps behind them.

Lightning logs a validation inside `fit` at its count of stepped batches before the current batch's increment, one
less than `trainer.global_step` (the 10th step's validation at step 9), but a validation before `fit` at 0. Logged at
`global_step` instead, a validation after N steps sits at step N: where the checkpoint of that validation is named
(`best-stepN.ckpt`), where the run's own loss curve puts it, and at N steps' FLOPs on a study's compute axis.
"""

from __future__ import annotations

import pytorch_lightning as pl
from pytorch_lightning.callbacks import Callback


class ValidationAtItsStep(Callback):
    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.sanity_checking:
            pl_module.log("step", float(trainer.global_step))  # Lightning's key for the step of the logged metrics
