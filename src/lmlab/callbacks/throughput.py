"""Throughput and MFU through Lightning's ThroughputMonitor.

`items` are real (non-padding) tokens, so `train/items_per_sec` is tokens/s; FLOPs come from the
module's `flops_per_batch`, which each objective computes. MFU is over the GPU's dense peak: for half precision it
comes from `DENSE_HALF_PRECISION_TFLOPS`, because Lightning's own table lists the H200 at its 2:4-sparse peak (2,000
TFLOP/s, twice the dense one) and does not resolve a plain "NVIDIA H200" at all. On the CPU no peak is known, so MFU
is not logged.
"""

from __future__ import annotations

from typing import Any

import torch
from lightning_fabric.utilities.throughput import get_available_flops
from pytorch_lightning import LightningModule, Trainer
from pytorch_lightning.callbacks import ThroughputMonitor

from lmlab.callbacks.lightning_internals import (
    continue_throughput_totals,
    set_throughput_peak,
    throughput_totals,
)

# Dense bf16/fp16 tensor-core peak, TFLOP/s, by a part of torch.cuda.get_device_name(); the first match wins
DENSE_HALF_PRECISION_TFLOPS = (
    ("h100 pcie", 756.0),
    ("h100 nvl", 835.0),
    ("h200 nvl", 835.0),
    ("h100", 989.4),
    ("h200", 989.4),
    ("a100", 312.0),
    ("l40s", 362.1),
    ("l4", 121.0),
)
_HALF = (torch.bfloat16, torch.float16)
_COMPUTE_DTYPE = {"bf16": torch.bfloat16, "16": torch.float16, "32": torch.float32, "64": torch.float64}


def peak_flops(device: torch.device, dtype: torch.dtype) -> int | None:
    """The dense peak FLOP/s of `device` computing in `dtype`, or None where it is not known (the CPU, say)."""
    if device.type != "cuda":
        return None
    if dtype in _HALF:
        name = torch.cuda.get_device_name(device).lower()
        tflops = next((peak for key, peak in DENSE_HALF_PRECISION_TFLOPS if key in name), None)
        if tflops is not None:
            return round(tflops * 1e12)
    return get_available_flops(device, dtype)


def compute_dtype(precision: str) -> torch.dtype:
    """The dtype the matmuls of a run at Lightning precision `precision` ("bf16-mixed", "32-true", ...) run in."""
    return _COMPUTE_DTYPE[precision.split("-")[0]]


class TokenThroughput(ThroughputMonitor):
    """ThroughputMonitor whose MFU is over `peak_flops`, and whose counts (`train/samples`, `train/items`,
    `train/time`, ...) go on across a resume: they are saved in each checkpoint and continued from."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._resumed_totals: dict[str, float] = {}

    def state_dict(self) -> dict[str, Any]:
        return throughput_totals(self)

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._resumed_totals = dict(state_dict)

    def on_train_start(self, trainer: Trainer, *args: Any) -> None:
        super().on_train_start(trainer, *args)
        if self._resumed_totals and trainer.is_global_zero:
            continue_throughput_totals(self, self._resumed_totals)
            self._resumed_totals = {}

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        super().setup(trainer, pl_module, stage)
        set_throughput_peak(self, peak_flops(trainer.strategy.root_device, compute_dtype(str(trainer.precision))))


def _batch_size(batch: dict[str, torch.Tensor]) -> int:
    return int(batch["input_ids"].shape[0])


def _real_tokens(batch: dict[str, torch.Tensor]) -> int:
    return int(batch["n_tokens"])


def token_throughput(window_size: int = 20) -> TokenThroughput:
    return TokenThroughput(batch_size_fn=_batch_size, length_fn=_real_tokens, window_size=window_size)
