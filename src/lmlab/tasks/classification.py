"""Sequence classification, single text or text pair: pooled representation -> label; accuracy, macro F1 and
Matthews correlation."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics import MetricCollection
from torchmetrics.classification import MulticlassAccuracy, MulticlassF1Score, MulticlassMatthewsCorrCoef

from lmlab.config_schema import choice
from lmlab.data.synthetic import Document
from lmlab.errors import InputError
from lmlab.models import Backbone, ModelConfig
from lmlab.tasks.base import TaskConfig, TaskFamily, TaskOutput, contextual, pooled
from lmlab.tasks.examples import TextExample
from lmlab.tasks.readers import label_field, refuse_confusable_labels, rows, text_field
from lmlab.tasks.sources import label_names

SYNTHETIC_LABELS = ("topic", "sentiment")


@dataclass
class ClassificationConfig(TaskConfig):
    """Files: .csv, .tsv or .jsonl with a text column (and a second text for pairs) and a label column."""

    family: str = "classification"
    label_field: str = "topic"  # synthetic: topic | sentiment
    text_column: str = "text"
    text_pair_column: str | None = None
    label_column: str = "label"
    # .tsv fields are taken as written (a leading quote is text); true reads them with CSV quote rules instead
    tsv_quoting: bool = False

    def validate(self) -> None:
        super().validate()
        if self.source == "synthetic":
            choice("task.label_field", self.label_field, SYNTHETIC_LABELS)
        if self.tsv_quoting and not (self.source == "files" and self.train_file.lower().endswith(".tsv")):
            raise InputError("task.tsv_quoting=true applies to .tsv task files only; it would be ignored here")


class ClassificationHead(nn.Module):
    """BERT's pooler (dense + tanh) and a linear classifier, with dropout."""

    def __init__(self, d_model: int, n_labels: int, dropout: float) -> None:
        super().__init__()
        self.pool = nn.Linear(d_model, d_model)
        self.drop = nn.Dropout(dropout)
        self.out = nn.Linear(d_model, n_labels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.drop(torch.tanh(self.pool(x))))


class Classification(TaskFamily):
    Config = ClassificationConfig
    main_metric = "acc"
    hf_head = "sequence_classification"

    @staticmethod
    def from_synthetic(cfg: ClassificationConfig, documents: list[Document]) -> list[TextExample]:
        return [TextExample(d.text, getattr(d, cfg.label_field)) for d in documents]

    @staticmethod
    def read_file(cfg: ClassificationConfig, path: Path) -> list[TextExample]:
        return read_classification(path, cfg.text_column, cfg.label_column, cfg.text_pair_column, cfg.tsv_quoting)

    @staticmethod
    def hub_columns(cfg: ClassificationConfig) -> list[str]:
        return [c for c in (cfg.text_column, cfg.text_pair_column, cfg.label_column) if c]

    @staticmethod
    def from_hub(cfg: ClassificationConfig, data) -> list[TextExample]:
        names = label_names(data.features[cfg.label_column])
        pair = cfg.text_pair_column
        return [
            TextExample(row[cfg.text_column], names(row[cfg.label_column]), row[pair] if pair else None) for row in data
        ]

    @staticmethod
    def label_set(examples: list[TextExample]) -> list[str]:
        labels = sorted({e.label for e in examples})
        refuse_confusable_labels(labels, "the training examples")
        if len(labels) < 2:
            raise InputError(
                f"the training examples have {len(labels)} distinct label(s) {labels}: classification needs at least "
                "two. Check task.label_column (and task.max_train_examples, which keeps the first N examples)"
            )
        return labels

    def encode(self, example: TextExample) -> dict[str, np.ndarray]:
        """[CLS] text [SEP] (pair [SEP]), the text truncated first so the pair keeps at least half the room."""
        tok = self.tokenizer.tokenizer
        text = tok.encode(example.text, add_special_tokens=False).ids
        room = self.cfg.max_length - 2
        pair: list[int] = []
        if example.text_pair is not None:
            pair = tok.encode(example.text_pair, add_special_tokens=False).ids
            room -= 1
            pair = pair[: max(room // 2, room - len(text))]
        text = text[: room - len(pair)]
        ids = [self.cls_id, *text, self.sep_id]
        segments = [0] * len(ids)
        if example.text_pair is not None:
            ids += [*pair, self.sep_id]
            segments += [1] * (len(pair) + 1)
        out = self._pad(ids, {"segment_ids": segments} if self.segments else None)
        if example.label not in self.label_ids:
            raise InputError(f"label {example.label!r} is not among the training labels {self.labels}")
        out["label"] = np.asarray(self.label_ids[example.label])
        return out

    def build_head(self, model_cfg: ModelConfig) -> nn.Module:
        return ClassificationHead(model_cfg.d_model, len(self.labels), self.cfg.head_dropout)

    def forward(self, backbone: Backbone, head: nn.Module, batch: dict[str, torch.Tensor]) -> TaskOutput:
        logits = head(pooled(backbone, contextual(backbone, batch), batch)).float()
        return TaskOutput(F.cross_entropy(logits, batch["label"]), logits.argmax(-1))

    def metrics(self, examples: list) -> MetricCollection:
        n = len(self.labels)
        return MetricCollection(
            {
                "acc": MulticlassAccuracy(n, average="micro"),
                "f1": MulticlassF1Score(n, average="macro"),
                "mcc": MulticlassMatthewsCorrCoef(n),
            }
        )

    def update_metrics(self, metrics: MetricCollection, out: TaskOutput, batch: dict[str, torch.Tensor]) -> None:
        metrics.update(out.predictions, batch["label"])


FAMILY = Classification


def read_classification(
    path: Path, text_column: str, label_column: str, pair_column: str | None, tsv_quoting: bool = False
) -> list[TextExample]:
    examples = []
    for line, row in rows(path, tsv_quoting):
        pair = text_field(path, line, row, pair_column) if pair_column else None
        text, label = text_field(path, line, row, text_column), label_field(path, line, row, label_column)
        examples.append(TextExample(text, label, pair))
    if not examples:
        raise InputError(f"task data file {path} holds no examples")
    return examples
