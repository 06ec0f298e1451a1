"""What every downstream task family provides: example encoding, a head, a loss, and metrics.

A family works on any backbone layout: encoders (and the encoder of an encoder-decoder) read the input
bidirectionally and mean-pool over real tokens; a prefix-LM reads the whole input as its prefix; a decoder
pools at the last real token, the only one that has seen the whole input.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn
from torchmetrics import MetricCollection

from lmlab.data.tokenizer import CLS, PAD, SEP, TrainedTokenizer
from lmlab.models import Backbone, ModelConfig


@dataclass
class TaskOutput:
    loss: torch.Tensor
    predictions: torch.Tensor


class TaskFamily(ABC):
    """Subclasses implement the encoding of one example, the head, the forward pass and the metrics."""

    # The metric a summary table reports (a key of `metrics()`).
    main_metric: ClassVar[str]

    def __init__(self, cfg: Any, tokenizer: TrainedTokenizer, labels: list[str], model_cfg: ModelConfig) -> None:
        self.cfg = cfg
        self.tokenizer = tokenizer
        self.labels = labels
        self.label_ids = {label: i for i, label in enumerate(labels)}
        self.layout = model_cfg.layout
        self.segments = model_cfg.segments
        self.cls_id, self.sep_id, self.pad_id = (tokenizer.token_id(t) for t in (CLS, SEP, PAD))

    @staticmethod
    @abstractmethod
    def label_set(examples: list) -> list[str]:
        """The labels found in the training examples, in a stable order."""

    @abstractmethod
    def encode(self, example: Any) -> dict[str, np.ndarray]:
        """One example -> fixed-length arrays (`max_length`), including `n_real`."""

    def features(self, examples: list) -> list[dict[str, np.ndarray]]:
        """The model inputs of `examples`: one per example, unless a family splits long ones into windows."""
        return [self.encode(e) for e in examples]

    @abstractmethod
    def build_head(self, model_cfg: ModelConfig) -> nn.Module: ...

    @abstractmethod
    def forward(self, backbone: Backbone, head: nn.Module, batch: dict[str, torch.Tensor]) -> TaskOutput: ...

    @abstractmethod
    def metrics(self, examples: list) -> MetricCollection:
        """Fresh metrics for evaluating on `examples` (families that score text hold the references)."""

    @abstractmethod
    def update_metrics(self, metrics: MetricCollection, out: TaskOutput, batch: dict[str, torch.Tensor]) -> None: ...

    def _pad(self, ids: list[int], extra: dict[str, list[int]] | None = None) -> dict[str, np.ndarray]:
        """Pad ids (and per-position `extra` arrays, padded with their own first value) to max_length."""
        length = self.cfg.max_length
        out = {"input_ids": np.full(length, self.pad_id, dtype=np.int64), "n_real": np.asarray(len(ids))}
        out["input_ids"][: len(ids)] = ids
        for key, values in (extra or {}).items():
            array = np.full(length, values[0] if key == "segment_ids" else -100, dtype=np.int64)
            array[: len(values)] = values
            out[key] = array
        return out


def contextual(backbone: Backbone, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Hidden states of the input, read as fully as the layout allows."""
    extra: dict[str, torch.Tensor] = {}
    if backbone.cfg.layout == "prefix_lm":
        extra["prefix_lengths"] = batch["n_real"]
    if backbone.cfg.segments and "segment_ids" in batch:
        extra["segment_ids"] = batch["segment_ids"]
    return backbone(batch["input_ids"], batch.get("padding_mask"), **extra)


def pooled(backbone: Backbone, hidden: torch.Tensor, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """One vector per example: the mean over real tokens for bidirectional layouts (pretraining never shows them a
    [CLS] to summarise into), the last real token for a decoder (the only one that has seen the whole input)."""
    if backbone.cfg.layout == "decoder":
        return hidden[torch.arange(hidden.shape[0], device=hidden.device), batch["n_real"] - 1]
    real = batch["padding_mask"].unsqueeze(-1).to(hidden.dtype)
    return (hidden * real).sum(1) / real.sum(1).clamp(min=1.0)
