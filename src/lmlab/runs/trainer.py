"""The Lightning Trainer both pretraining and fine-tuning runs use, built from `TrainerConfig`."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.callbacks import Callback
from pytorch_lightning.loggers import CSVLogger, Logger, MLFlowLogger

from lmlab.callbacks.progress import ProgressLines
from lmlab.runs.checkpoints import AtomicCheckpointIO
from lmlab.runs.config import LoggerConfig, TrainerConfig
from lmlab.runs.console import live_progress, quiet_libraries
from lmlab.runs.slurm import cluster_plugins
from lmlab.tracking.buffered import BufferedClient
from lmlab.tracking.mlflow_run import MlflowRun


def build_trainer(t: TrainerConfig, run_dir: Path, logger: Logger | bool, callbacks: list[Callback]) -> pl.Trainer:
    """A Trainer for `t`; progress is a live bar on a terminal, else a log line every `t.log_every_n_steps`."""
    quiet_libraries()
    bar = t.enable_progress_bar and live_progress()
    if not bar:
        callbacks = [*callbacks, ProgressLines(t.log_every_n_steps)]
    return pl.Trainer(
        accelerator=t.accelerator,
        devices=t.devices,
        precision=t.precision,
        max_steps=t.max_steps,
        val_check_interval=t.val_check_interval,
        check_val_every_n_epoch=None,
        limit_val_batches=t.limit_val_batches,
        log_every_n_steps=t.log_every_n_steps,
        gradient_clip_val=t.gradient_clip_val,
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


class ContinuingMLFlowLogger(MLFlowLogger):
    """Logs into an existing run through its `BufferedClient` (training goes on through a tracking outage); a metric
    at a step the run already holds (a step replayed after resuming from an earlier checkpoint, which reproduces the
    same value) is not logged a second time."""

    def __init__(self, client: BufferedClient, logged_steps: dict[str, int], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._mlflow_client = client
        self.logged_steps = logged_steps

    def finalize(self, status: str = "success") -> None:
        """Lightning finalizes after every `validate` and `fit`, which would mark a run FINISHED after its step-0
        validation while it trains on, or FAILED when it stops on a signal. The run code sets every status."""

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        if step is not None:
            metrics = {k: v for k, v in metrics.items() if step > self.logged_steps.get(k, -1)}
        if metrics:
            super().log_metrics(metrics, step)


def lightning_logger(cfg: LoggerConfig, run_dir: Path, tracked: MlflowRun | None) -> Logger | bool:
    """Lightning's MLflow logger writing into our (already opened) run, a CSV logger, or none."""
    if tracked is not None:
        return ContinuingMLFlowLogger(
            tracked.client,
            tracked.logged_steps,
            experiment_name=cfg.experiment,
            tracking_uri=tracked.tracking_uri,
            run_id=tracked.run_id,
        )
    if cfg.kind == "csv":
        return CSVLogger(save_dir=run_dir, name="csv")
    return False
