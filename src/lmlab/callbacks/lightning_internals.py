"""The one place lmlab uses Lightning API that is not public; tests/test_lightning_internals.py fails loudly when an
upgrade moves it.

A run stopped by a signal saves `last.ckpt` and raises from `on_train_batch_end` (`lmlab.callbacks.preemption`), so
the stop lands exactly at that batch on every rank. Lightning logs a batch's metrics only after every
`on_train_batch_end` hook has run, and no public hook comes between, so the stopped batch's metrics are handed to
the loggers here first; otherwise the resumed run would be missing that step.

ThroughputMonitor counts samples, items, batches and time from the start of each `fit`, so a resumed run's
`train/samples` and `train/time` would count its last segment only; `throughput_totals` reads the counts for a
checkpoint and `continue_throughput_totals` starts the next segment from them.

ThroughputMonitor looks its MFU peak up in Lightning's own table when it is set up; `set_throughput_peak` replaces it
with lmlab's (`lmlab.callbacks.throughput.peak_flops`) in the stage meters that setup made.
"""

from __future__ import annotations

import pytorch_lightning as pl
from pytorch_lightning.callbacks import ThroughputMonitor
from pytorch_lightning.trainer.states import RunningStage

_TRAINING = RunningStage.TRAINING


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


def throughput_totals(monitor: ThroughputMonitor) -> dict[str, float]:
    """What a monitor has counted of training so far: samples, items, batches and seconds."""
    if _TRAINING not in monitor._samples:
        return {}
    times = monitor._throughputs[_TRAINING]._time
    return {
        "samples": monitor._samples[_TRAINING],
        "items": monitor._lengths[_TRAINING],
        "batches": monitor._batches[_TRAINING],
        "time": times[-1] if times else 0.0,
    }


def continue_throughput_totals(monitor: ThroughputMonitor, totals: dict[str, float]) -> None:
    """Count on from `totals` (read by `throughput_totals` before a stop) in a monitor that has just started."""
    monitor._samples[_TRAINING] = int(totals["samples"])
    monitor._lengths[_TRAINING] = int(totals["items"])
    monitor._batches[_TRAINING] = int(totals["batches"])
    monitor._t0s[_TRAINING] -= float(totals["time"])
