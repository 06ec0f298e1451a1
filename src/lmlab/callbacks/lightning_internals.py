"""The one place lmlab uses Lightning API that is not public; tests/test_lightning_internals.py fails loudly when an
upgrade moves it.

A run stopped by a signal saves `last.ckpt` and raises from `on_train_batch_end` (`lmlab.callbacks.preemption`), so
the stop lands exactly at that batch on every rank. Lightning logs a batch's metrics only after every
`on_train_batch_end` hook has run, and no public hook comes between, so the stopped batch's metrics are handed to
the loggers here first; otherwise the resumed run would be missing that step.

ThroughputMonitor looks its MFU peak up in Lightning's own table when it is set up; `set_throughput_peak` replaces it
with lmlab's (`lmlab.callbacks.throughput.peak_flops`) in the stage meters that setup made.
"""

from __future__ import annotations

import pytorch_lightning as pl
from pytorch_lightning.callbacks import ThroughputMonitor


def log_batch_metrics_now(trainer: pl.Trainer) -> None:
    """Send the current training batch's logged metrics to the loggers, as Lightning would after the hooks."""
    connector = trainer._logger_connector
    connector.on_batch_end()
    connector.update_train_step_metrics()


def set_throughput_peak(monitor: ThroughputMonitor, flops: int | None) -> None:
    """Make `flops` the peak that every stage meter of a set-up `monitor` computes MFU over (None: no MFU)."""
    monitor.available_flops = flops
    for meter in monitor._throughputs.values():
        meter.available_flops = flops
