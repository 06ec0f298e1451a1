"""What every downstream task family provides: example encoding, a head, a loss, and metrics.

A family works on any backbone layout: encoders (and the encoder of an encoder-decoder) read the input
bidirectionally and mean-pool over real tokens; a prefix-LM reads the whole input as its prefix; a decoder
pools at the last real token, the only one that has seen the whole input.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn
from torchmetrics import MetricCollection

from lmlab.config_schema import at_least, choice, parse_node, require_file
from lmlab.data.config import WorldConfig
from lmlab.data.synthetic import Document
from lmlab.data.tokenizer import CLS, PAD, SEP, TrainedTokenizer
from lmlab.errors import InputError
from lmlab.models import Backbone, ModelConfig

SOURCES = ("synthetic", "files", "hub")
SYNTHETIC_TEXTS = ("document", "snippet", "mention")


@dataclass
class TaskConfig:
    """What every task family's config holds: the task's name and family, where its examples come from, and the
    sizes. A family subclasses it with its own columns and settings (`TaskFamily.Config`)."""

    name: str = "???"
    family: str = "???"
    source: str = "synthetic"  # synthetic | files | hub
    # synthetic: documents of the synthetic world that pretraining never saw; `synthetic_text` document (a whole
    # document) | snippet (a sentence whose one topic word is rare) | mention (a sentence naming a person: their topic
    # is world knowledge). train/validation_examples count documents.
    world: WorldConfig = field(default_factory=WorldConfig)
    synthetic_text: str = "document"
    train_examples: int = 2000
    validation_examples: int = 500
    # files: the family's formats (see its reader)
    train_file: str = ""
    validation_file: str = ""
    # hub: a Hugging Face dataset name (or a save_to_disk directory) and its splits
    hub_path: str = ""
    hub_name: str | None = None
    train_split: str = "train"
    validation_split: str = "validation"
    # all sources
    max_train_examples: int | None = None  # the first N training examples (sample-efficiency curves)
    max_length: int = 128
    batch_size: int = 32
    head_dropout: float = 0.1
    main_metric: str | None = None  # the metric summary tables report; None: the family's
    # Which fine-tuned weights are exported and scored: last (the final step's, as BERT's and RoBERTa's fine-tuning
    # protocols report) | best (the validation checkpoint best by main_metric: selected on the split it is scored on)
    select: str = "last"

    def validate(self) -> None:
        choice("task.source", self.source, SOURCES)
        if self.source == "synthetic":
            choice("task.synthetic_text", self.synthetic_text, SYNTHETIC_TEXTS)
            at_least("task.train_examples", self.train_examples, 1)
            at_least("task.validation_examples", self.validation_examples, 1)
        if self.source == "files":
            if not (self.train_file and self.validation_file):
                raise InputError("task.source=files needs task.train_file and task.validation_file")
            require_file(self.train_file, "task.train_file")
            require_file(self.validation_file, "task.validation_file")
        if self.source == "hub" and not self.hub_path:
            raise InputError("task.source=hub needs task.hub_path (a dataset name or a save_to_disk directory)")
        if self.max_train_examples is not None:
            at_least("task.max_train_examples", self.max_train_examples, 1)
        choice("task.select", self.select, ("last", "best"))
        at_least("task.max_length", self.max_length, 4)
        at_least("task.batch_size", self.batch_size, 1)
        if not 0 <= self.head_dropout < 1:
            raise InputError(f"task.head_dropout must be in [0, 1), got {self.head_dropout}")


@dataclass
class TaskOutput:
    loss: torch.Tensor
    predictions: torch.Tensor


class TaskFamily(ABC):
    """Subclasses set `Config` (a TaskConfig) and implement reading examples from each source, the encoding of one
    example, the head, the forward pass and the metrics."""

    Config: ClassVar[type[TaskConfig]]
    # The metric a summary table reports (a key of `metrics()`).
    main_metric: ClassVar[str]
    # The Hugging Face head a fine-tune of this family exports as; None: the backbone's own language-model head (a
    # family that writes text), which needs a layout that writes text.
    hf_head: ClassVar[str | None] = None

    @classmethod
    def parse_config(cls, cfg: Any) -> Any:
        """The user's `task` node as this family's typed config; unknown keys and bad types are errors."""
        return parse_node(cfg, cls.Config, "task.")

    @staticmethod
    @abstractmethod
    def from_synthetic(cfg: Any, documents: list[Document]) -> list:
        """Examples from synthetic-world documents (their text, entities, facts, headline, topic, sentiment)."""

    @staticmethod
    @abstractmethod
    def read_file(cfg: Any, path: Path) -> list:
        """Examples from a local file in one of the family's formats; a bad row is an error naming file:line."""

    @staticmethod
    @abstractmethod
    def hub_columns(cfg: Any) -> list[str]:
        """The dataset columns the family reads (a nested field as `column.field`)."""

    @staticmethod
    @abstractmethod
    def from_hub(cfg: Any, data: Any) -> list:
        """Examples from one split of a `datasets.Dataset`."""

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
