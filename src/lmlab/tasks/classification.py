"""Sequence classification, single text or text pair: pooled representation -> label; accuracy, macro F1 and
Matthews correlation."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics import MetricCollection
from torchmetrics.classification import MulticlassAccuracy, MulticlassF1Score, MulticlassMatthewsCorrCoef

from lmlab.errors import InputError
from lmlab.models import Backbone, ModelConfig
from lmlab.tasks.base import TaskFamily, TaskOutput, contextual, pooled
from lmlab.tasks.examples import TextExample


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
    main_metric = "acc"

    @staticmethod
    def label_set(examples: list[TextExample]) -> list[str]:
        labels = sorted({e.label for e in examples})
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
