"""Token classification (NER) with BIO tags: each word is labelled at its first sub-word token; metrics are
entity-level precision, recall and F1 (exact span and type)."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics import MetricCollection

from lmlab.errors import InputError
from lmlab.heads import IGNORE
from lmlab.models import Backbone, ModelConfig
from lmlab.tasks.base import TaskFamily, TaskOutput, contextual
from lmlab.tasks.entities import EntityF1
from lmlab.tasks.examples import TaggedExample


class TokenClassification(TaskFamily):
    main_metric = "f1"

    @staticmethod
    def label_set(examples: list[TaggedExample]) -> list[str]:
        """ "O" first, then each entity type's B- and I- tags (both, even when the data lacks some I- tags)."""
        types = sorted({t[2:] for e in examples for t in e.tags if t != "O"})
        return ["O"] + [f"{p}-{kind}" for kind in types for p in ("B", "I")]

    def encode(self, example: TaggedExample) -> dict[str, np.ndarray]:
        """[CLS] word pieces [SEP]; `labels` holds each word's tag at its first piece and IGNORE elsewhere;
        words cut off by max_length are neither trained on nor evaluated."""
        enc = self.tokenizer.tokenizer.encode(example.tokens, is_pretokenized=True, add_special_tokens=False)
        pieces = enc.ids[: self.cfg.max_length - 2]
        words = enc.word_ids[: len(pieces)]
        labels = [IGNORE] * len(pieces)
        previous = None
        for i, word in enumerate(words):
            if word is not None and word != previous:
                tag = example.tags[word]
                if tag not in self.label_ids:
                    raise InputError(f"tag {tag!r} is not among the training tags {self.labels}")
                labels[i] = self.label_ids[tag]
            previous = word
        return self._pad([self.cls_id, *pieces, self.sep_id], {"labels": [IGNORE, *labels, IGNORE]})

    def build_head(self, model_cfg: ModelConfig) -> nn.Module:
        return nn.Sequential(nn.Dropout(self.cfg.head_dropout), nn.Linear(model_cfg.d_model, len(self.labels)))

    def forward(self, backbone: Backbone, head: nn.Module, batch: dict[str, torch.Tensor]) -> TaskOutput:
        logits = head(contextual(backbone, batch)).float()
        labels = batch["labels"]
        loss = F.cross_entropy(logits.flatten(0, 1), labels.flatten(), ignore_index=IGNORE)
        return TaskOutput(loss, logits.argmax(-1))

    def metrics(self, examples: list) -> MetricCollection:
        return MetricCollection({"entity": EntityF1()})

    def tags(self, ids: torch.Tensor, labels: torch.Tensor) -> list[str]:
        """Word-level tags from per-piece label ids, read at each word's first piece."""
        return [self.labels[int(ids[i])] for i in (labels != IGNORE).nonzero().flatten()]

    def update_metrics(self, metrics: MetricCollection, out: TaskOutput, batch: dict[str, torch.Tensor]) -> None:
        pairs = list(zip(out.predictions, batch["labels"], strict=True))
        predicted = [self.tags(pred, labels) for pred, labels in pairs]
        metrics["entity"].update(predicted, [self.tags(labels, labels) for _, labels in pairs])


FAMILY = TokenClassification
