"""The LightningModule of a meta-learning run: manual optimisation, because one optimiser step is a whole batch of
episodes, each with its own inner loop, and Reptile's meta-gradient is not the gradient of a loss."""

from __future__ import annotations

from collections.abc import Mapping

import pytorch_lightning as pl
import torch
from pytorch_lightning.utilities.types import OptimizerLRSchedulerConfig
from torchmetrics import MeanMetric

from lmlab.meta.algorithms import MetaAlgorithm
from lmlab.meta.episodes import Episode
from lmlab.runs.config import OptimConfig
from lmlab.runs.manual_step import manual_step
from lmlab.runs.optim import lightning_optimizers


class MetaModule(pl.LightningModule):
    def __init__(
        self, algorithm: MetaAlgorithm, optim_cfg: OptimConfig, max_steps: int, clip: float, eval_steps: int
    ) -> None:
        super().__init__()
        self.automatic_optimization = False
        self.algorithm = algorithm
        self.optim_cfg, self.max_steps, self.clip, self.eval_steps = optim_cfg, max_steps, clip, eval_steps
        self.val_acc = MeanMetric()
        self.val_loss = MeanMetric()

    def training_step(self, episodes: list[Episode], batch_idx: int) -> None:
        metrics = manual_step(self, lambda: self.algorithm.meta_gradients(episodes), clip=self.clip)
        self.lr_schedulers().step()  # type: ignore[union-attr]
        self.log_dict({f"train/{key}": value for key, value in metrics.items()}, prog_bar=True)

    def validation_step(self, episodes: list[Episode], batch_idx: int) -> None:
        lr: float | Mapping[str, torch.Tensor] = self.algorithm.inner_lrs()
        for episode in episodes:
            score = self.algorithm.score(episode, self.eval_steps, lr)
            self.val_acc.update(score.accuracy)
            self.val_loss.update(score.query_losses[-1])

    def on_validation_epoch_end(self) -> None:
        self.log_dict({"val/acc": self.val_acc.compute(), "val/loss": self.val_loss.compute()}, prog_bar=True)
        self.val_acc.reset()
        self.val_loss.reset()

    def configure_optimizers(self) -> OptimizerLRSchedulerConfig:
        return lightning_optimizers(self.algorithm, self.optim_cfg, self.max_steps)
