"""The Lightning Trainer both pretraining and fine-tuning runs use, built from `TrainerConfig`."""

from __future__ import annotations

import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from mlflow.entities import Metric
from pytorch_lightning.callbacks import Callback
from pytorch_lightning.loggers import CSVLogger, Logger
from pytorch_lightning.strategies import DDPStrategy, Strategy

from lmlab.callbacks.progress import ProgressLines
from lmlab.callbacks.validation_step import ValidationAtItsStep
from lmlab.runs.checkpoints import AtomicCheckpointIO
from lmlab.runs.config import LoggerConfig, TrainerConfig
from lmlab.runs.console import live_progress, quiet_libraries
from lmlab.runs.sharding import fsdp_strategy
from lmlab.runs.slurm import cluster_plugins
from lmlab.tracking.buffered import BufferedClient
from lmlab.tracking.mlflow_run import MlflowRun


def build_trainer(
    t: TrainerConfig,
    run_dir: Path,
    logger: Logger | bool,
    callbacks: list[Callback],
    find_unused_parameters: bool = False,
) -> pl.Trainer:
    """A Trainer for `t`; progress is a live bar on a terminal, else a log line every `t.log_every_n_steps`.
    `find_unused_parameters`: some parameters get no gradient in some steps (a mixture's heads), which DDP must know."""
    quiet_libraries()
    bar = t.enable_progress_bar and live_progress()
    callbacks = [*callbacks, ValidationAtItsStep()]
    if not bar:
        callbacks = [*callbacks, ProgressLines(t.log_every_n_steps)]
    return pl.Trainer(
        accelerator=t.accelerator,
        devices=t.devices,
        num_nodes=t.num_nodes,
        strategy=strategy(t, find_unused_parameters),
        precision=t.precision,  # type: ignore[arg-type]  # one of PRECISIONS (TrainerConfig.validate)
        max_steps=t.max_steps,
        val_check_interval=t.val_check_interval,
        check_val_every_n_epoch=None,
        limit_val_batches=t.limit_val_batches,
        log_every_n_steps=t.log_every_n_steps,
        gradient_clip_val=t.gradient_clip_val or None,  # 0: none (a manual-optimisation stage clips itself)
        accumulate_grad_batches=t.accumulate_grad_batches,
        num_sanity_val_steps=t.num_sanity_val_steps,
        enable_progress_bar=bar,
        # Its table ends in "Total Flops 0" on every run; the run logs its parameter count itself.
        enable_model_summary=False,
        deterministic=t.deterministic,
        default_root_dir=run_dir,
        logger=logger,
        callbacks=callbacks,
        plugins=[AtomicCheckpointIO(), *cluster_plugins()],
        # Samplers are ours (EpochSampler shards by rank itself).
        use_distributed_sampler=False,
        # Metric states reset under inference mode (the step-0 validation) could not be updated afterwards.
        inference_mode=False,
    )


def strategy(t: TrainerConfig, find_unused_parameters: bool = False) -> str | Strategy:
    """Lightning's strategy for trainer.strategy (fsdp: see `lmlab.runs.sharding`)."""
    if t.strategy == "fsdp":
        return fsdp_strategy()
    several = not isinstance(t.devices, int) or t.devices * t.num_nodes > 1  # "auto", -1 or a list: maybe several
    if t.strategy == "ddp" or (t.strategy == "auto" and find_unused_parameters and several):
        return DDPStrategy(find_unused_parameters=find_unused_parameters)
    return "auto"


class TrackedRunLogger(Logger):
    """Lightning's view of the MLflow run lmlab opened (`lmlab.runs.run_record`), written through its `BufferedClient`
    so training goes on through a tracking outage. Built on Lightning's public `Logger` base: lmlab owns the run,
    so it needs none of `MLFlowLogger`'s run creation. A metric at a step the run already holds (a step replayed
    after resuming from an earlier checkpoint, which reproduces the same value) is not logged a second time.
    The run code, not Lightning, sets the run's status."""

    def __init__(self, tracked: MlflowRun, experiment_name: str) -> None:
        super().__init__()
        self.tracked = tracked
        self.experiment_name = experiment_name

    @property
    def name(self) -> str:
        return self.experiment_name

    @property
    def version(self) -> str:
        return self.tracked.run_id

    @property
    def experiment(self) -> BufferedClient:
        return self.tracked.client

    def log_hyperparams(self, params: Any, *args: Any, **kwargs: Any) -> None:
        """Parameters are the run's resolved config, logged when the run opened."""

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        logged = self.tracked.logged_steps
        at = 0 if step is None else step
        timestamp = int(time.time() * 1000)
        batch = [
            Metric(key, float(value), timestamp, at)
            for key, value in metrics.items()
            if step is None or step > logged.get(key, -1)
        ]
        if batch:
            self.tracked.client.log_batch(self.tracked.run_id, metrics=batch)


def lightning_logger(cfg: LoggerConfig, run_dir: Path, tracked: MlflowRun | None) -> Logger | bool:
    """A logger writing into our (already opened) MLflow run, a CSV logger, or none."""
    if tracked is not None:
        return TrackedRunLogger(tracked, cfg.experiment)
    if cfg.kind == "csv":
        return CSVLogger(save_dir=run_dir, name="csv")
    return False
