"""The LightningModule of a fine-tuning run: a (pretrained) backbone + the task family's head."""

from __future__ import annotations

import pytorch_lightning as pl
import torch
from pytorch_lightning.utilities.types import OptimizerLRSchedulerConfig
from torchmetrics import MeanMetric, MetricCollection

from lmlab.models import Backbone
from lmlab.runs.config import OptimConfig
from lmlab.runs.optim import lightning_optimizers
from lmlab.tasks import TaskFamily


class FinetuneModule(pl.LightningModule):
    def __init__(
        self,
        family: TaskFamily,
        backbone: Backbone,
        val_metrics: MetricCollection,
        optim_cfg: OptimConfig,
        max_steps: int,
    ) -> None:
        super().__init__()
        self.family = family
        self.backbone = backbone
        self.head = family.build_head(backbone.cfg)
        self.optim_cfg = optim_cfg
        self.max_steps = max_steps
        self.val_loss = MeanMetric()
        self.val_metrics = val_metrics

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        out = self.family.forward(self.backbone, self.head, batch)
        self.log("train/loss", out.loss, prog_bar=True)
        return out.loss

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        out = self.family.forward(self.backbone, self.head, batch)
        self.val_loss.update(out.loss.detach(), weight=batch["input_ids"].shape[0])
        self.family.update_metrics(self.val_metrics, out, batch)

    def on_validation_epoch_end(self) -> None:
        metrics = {"val/loss": self.val_loss.compute()}
        for key, value in self.val_metrics.compute().items():
            metrics[f"val/{key}"] = value.float()
        self.log_dict(metrics, prog_bar=True)
        self.val_loss.reset()
        self.val_metrics.reset()

    def configure_optimizers(self) -> OptimizerLRSchedulerConfig:
        return lightning_optimizers(self, self.optim_cfg, self.max_steps)
