"""The LightningModule of a pretraining run: backbone + the objective's head, trained on its loss."""

from __future__ import annotations

import pytorch_lightning as pl
import torch
from pytorch_lightning.utilities.types import OptimizerLRSchedulerConfig
from torch import nn
from torchmetrics import MeanMetric, SumMetric

from lmlab.errors import InputError
from lmlab.models import Backbone, ModelConfig
from lmlab.models.blocks import TransformerBlock
from lmlab.models.stack import Stack
from lmlab.objectives import Objective, ObjectiveOutput
from lmlab.runs.config import OptimConfig
from lmlab.runs.optim import lightning_optimizers
from lmlab.runs.sharding import Sharding, built_for, full_state, is_sharded, shard


class PretrainModule(pl.LightningModule):
    def __init__(
        self,
        objective: Objective,
        model_cfg: ModelConfig,
        optim_cfg: OptimConfig,
        max_steps: int,
        compile_backbone: bool = False,
        sharding: Sharding | None = None,
    ) -> None:
        super().__init__()
        self.objective = objective
        with built_for(sharding):
            self.backbone = Backbone(model_cfg)
            self.head = objective.build_head(model_cfg)
        self.sharding = sharding
        self.optim_cfg = optim_cfg
        self.max_steps = max_steps
        self.compile_backbone = compile_backbone
        self.val_loss = MeanMetric()
        self.val_acc = MeanMetric()
        self.val_targets = SumMetric()
        # One weighted mean per reported loss component, created on first sight (a mixture reports several).
        self.val_parts: dict[str, MeanMetric] = {}
        # Read by Lightning's ThroughputMonitor after every training batch.
        self.flops_per_batch = 0

    def weights(self) -> nn.ModuleDict:
        """The trained modules, as handed to downstream runs."""
        return nn.ModuleDict({"backbone": self.backbone, "head": self.head})

    def exported_weights(self) -> nn.ModuleDict:
        """`weights()` whole, for writing: gathered from every rank's shards in a sharded run (a collective that
        every rank calls; the result is complete on rank 0 only)."""
        if not is_sharded(self):
            return self.weights()
        state = full_state(self)
        with torch.device("meta"):
            whole = nn.ModuleDict(
                {"backbone": Backbone(self.backbone.cfg), "head": self.objective.build_head(self.backbone.cfg)}
            )
        if state:  # cloned: a gathered tensor may be a view into a padded buffer, which safetensors will not save
            whole.load_state_dict({k: v.clone() for k, v in state.items() if k.split(".")[0] in whole}, assign=True)
        return whole

    def configure_model(self) -> None:
        """Called by Lightning once the processes are up, before each fit or validation: shards a sharded run's
        module (once), then compiles the backbone when asked."""
        if self.sharding is not None and not is_sharded(self):
            self.shard_onto(self.trainer.strategy.root_device)
        # Compiled wrapper kept outside the module tree, so state_dict names stay those of the plain backbone.
        compiled = torch.compile(self.backbone) if self.compile_backbone else self.backbone
        object.__setattr__(self, "_runner", compiled)

    def shard_onto(self, device: torch.device) -> None:
        """Shard this module as `self.sharding` says, its shards on `device` (a collective: every rank calls it)."""
        assert self.sharding is not None
        for stack in self.modules():
            if isinstance(stack, Stack):
                stack.checkpoint_blocks = self.sharding.cfg.activation_checkpointing
        shard(self, TransformerBlock, self.sharding, device)

    def forward(self, batch: dict[str, torch.Tensor]) -> ObjectiveOutput:
        """The objective's output on `batch`, through the compiled backbone when trainer.compile is set."""
        runner = self.__dict__.get("_runner", self.backbone)
        return self.objective.forward(runner, self.head, batch)

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        out = self(batch)
        self.flops_per_batch = self.objective.flops_per_batch(self.backbone, batch)
        self.log("train/loss", out.loss, prog_bar=True)
        self.log_dict({f"train/{key}": value for key, value in out.parts.items()})
        self.log("lr", self.trainer.optimizers[0].param_groups[0]["lr"])
        return out.loss

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        out = self(batch)
        weight = out.n_targets.float()
        self.val_loss.update(out.loss.detach(), weight=weight)
        self.val_targets.update(weight)
        self.val_acc.update(out.n_correct.float() / weight.clamp(min=1.0), weight=weight)
        for key, value in out.parts.items():
            if key not in self.val_parts:
                self.val_parts[key] = MeanMetric().to(self.device)
            self.val_parts[key].update(value.detach(), weight=weight)

    def on_validation_epoch_end(self) -> None:
        if float(self.val_targets.compute()) == 0:
            # An evaluation over nothing has no score: a loss of 0 would be the best any table shows.
            raise InputError(
                f"the validation split gave objective {self.objective.cfg.name} no token to predict (e.g. "
                "data.block_size too small for it, or a validation split too small to fill one block); raise "
                "data.block_size or give more validation text"
            )
        loss = self.val_loss.compute()
        metrics = {"val/loss": loss, "val/acc": self.val_acc.compute()}
        if self.objective.loss_is_nll:
            metrics["val/ppl"] = torch.exp(loss)
        self.log_dict(metrics, prog_bar=True)
        self.log_dict({f"val/{key}": metric.compute() for key, metric in self.val_parts.items()})
        for metric in (self.val_loss, self.val_acc, self.val_targets, *self.val_parts.values()):
            metric.reset()

    def configure_optimizers(self) -> OptimizerLRSchedulerConfig:
        return lightning_optimizers(self, self.optim_cfg, self.max_steps)
