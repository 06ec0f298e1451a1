"""The Lightning API lmlab relies on beyond the public one (lmlab.callbacks.lightning_internals), exercised on a
real Trainer, and the MLflow logger built on Lightning's public `Logger` base: an upgrade that moves either fails
here, by name, not as a lost metric in a resumed run."""

from __future__ import annotations

from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from mlflow.tracking import MlflowClient
from torch.utils.data import DataLoader, TensorDataset

from lmlab.callbacks import throughput
from lmlab.callbacks.lightning_internals import log_batch_metrics_now
from lmlab.runs.trainer import TrackedRunLogger
from lmlab.tracking.mlflow_run import open_run


class _Stop(Exception):
    pass


class _Tiny(pl.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(2, 1)

    def training_step(self, batch: list[torch.Tensor], batch_idx: int) -> torch.Tensor:
        loss = self.layer(batch[0]).pow(2).mean()
        self.log("train/loss", loss)
        return loss

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.1)


class _StopAfter(pl.Callback):
    """What the preemption callback does: hand the batch's metrics to the loggers, then stop by raising."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_end(self, trainer: pl.Trainer, *args: object) -> None:
        if trainer.global_step == self.step:
            log_batch_metrics_now(trainer)
            raise _Stop


def _fit(tmp_path: Path, logger: pl.loggers.Logger, callbacks: list[pl.Callback], steps: int = 6) -> None:
    data = DataLoader(TensorDataset(torch.randn(32, 2)), batch_size=4)
    trainer = pl.Trainer(
        max_steps=steps,
        logger=logger,
        callbacks=callbacks,
        log_every_n_steps=1,
        enable_progress_bar=False,
        enable_checkpointing=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
    )
    trainer.fit(_Tiny(), data)


def _open(tmp_path: Path, logged_steps: dict[str, int] | None = None):
    run = open_run(
        f"sqlite:///{tmp_path}/mlflow.db",
        experiment="lmlab",
        artifact_location="",
        run_dir=tmp_path / "run",
        run_name="run",
        tags={},
        params={},
        resume=False,
    )
    run.logged_steps.update(logged_steps or {})
    return run


def _steps(run) -> list[int]:
    client = MlflowClient(run.tracking_uri)
    return sorted(m.step for m in client.get_metric_history(run.run_id, "train/loss"))


def test_a_batch_stopped_in_on_train_batch_end_still_has_its_metrics_logged(tmp_path):
    run = _open(tmp_path)
    with pytest.raises(_Stop):
        _fit(tmp_path, TrackedRunLogger(run, "lmlab"), [_StopAfter(3)])
    assert _steps(run) == [0, 1, 2]  # the third batch (global_step 3 once it stepped) is the one stopped


def test_the_tracked_run_logger_skips_steps_the_run_already_holds(tmp_path):
    run = _open(tmp_path, logged_steps={"train/loss": 2})
    logger = TrackedRunLogger(run, "lmlab")
    _fit(tmp_path, logger, [])
    assert _steps(run) == [3, 4, 5]
    assert (logger.name, logger.version) == ("lmlab", run.run_id)


class _Tokens(pl.LightningModule):
    """Batches shaped like lmlab's, and the FLOPs count ThroughputMonitor reads."""

    flops_per_batch = 4_000

    def __init__(self) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(2, 1)

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        return self.layer(batch["input_ids"].float()).pow(2).mean()

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.1)


class _Metrics(pl.loggers.Logger):
    def __init__(self) -> None:
        super().__init__()
        self.logged: list[dict[str, float]] = []

    name = "metrics"
    version = "0"

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        self.logged.append(metrics)

    def log_hyperparams(self, *args: object, **kwargs: object) -> None:
        pass


def test_token_throughput_logs_mfu_over_lmlabs_peak_not_lightnings(tmp_path, monkeypatch):
    peak = 2_000_000
    monkeypatch.setattr(throughput, "peak_flops", lambda device, dtype: peak)
    batches = [{"input_ids": torch.ones(2, 2, dtype=torch.long), "n_tokens": torch.tensor(4)} for _ in range(8)]
    logger = _Metrics()
    trainer = pl.Trainer(
        max_steps=8,
        logger=logger,
        callbacks=[throughput.token_throughput(window_size=2)],
        log_every_n_steps=1,
        enable_progress_bar=False,
        enable_checkpointing=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
    )
    trainer.fit(_Tokens(), DataLoader(batches, batch_size=None))
    measured = [m for m in logger.logged if "train/device/mfu" in m]
    assert measured, "no MFU was logged"
    for m in measured:
        assert m["train/device/mfu"] == pytest.approx(m["train/device/flops_per_sec"] / peak)
