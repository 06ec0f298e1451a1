"""Keeps the logged loss curves in the checkpoint, so a resumed run still plots its whole history."""

from __future__ import annotations

from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.callbacks import Callback


class MetricHistory(Callback):
    def __init__(
        self, every_n_steps: int, keys: tuple[str, ...] = ("train/loss", "val/loss", "val/ppl", "val/acc")
    ) -> None:
        self.every_n_steps = max(1, every_n_steps)
        self.keys = keys
        self.history: dict[str, list[tuple[int, float]]] = {k: [] for k in keys}

    def _record(self, trainer: pl.Trainer, keys: tuple[str, ...]) -> None:
        for key in keys:
            value = trainer.callback_metrics.get(key)
            if value is not None:
                self.history[key].append((trainer.global_step, float(value)))

    def on_train_batch_end(self, trainer: pl.Trainer, *args: Any) -> None:
        if trainer.global_step % self.every_n_steps == 0:
            self._record(trainer, tuple(k for k in self.keys if k.startswith("train/")))

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.sanity_checking:
            self._record(trainer, tuple(k for k in self.keys if k.startswith("val/")))

    def state_dict(self) -> dict[str, Any]:
        return {"history": {k: [list(p) for p in v] for k, v in self.history.items()}}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        for key, points in state_dict["history"].items():
            self.history[key] = [(int(s), float(v)) for s, v in points]
