"""Throughput and MFU through Lightning's ThroughputMonitor.

`items` are real (non-padding) tokens, so `train/items_per_sec` is tokens/s; FLOPs come from the
module's `flops_per_batch`, which each objective computes. On CPU no peak FLOPs are known, so MFU
is not logged.
"""

from __future__ import annotations

import torch
from pytorch_lightning.callbacks import ThroughputMonitor


def _batch_size(batch: dict[str, torch.Tensor]) -> int:
    return int(batch["input_ids"].shape[0])


def _real_tokens(batch: dict[str, torch.Tensor]) -> int:
    return int(batch["n_tokens"])


def token_throughput(window_size: int = 20) -> ThroughputMonitor:
    return ThroughputMonitor(batch_size_fn=_batch_size, length_fn=_real_tokens, window_size=window_size)
