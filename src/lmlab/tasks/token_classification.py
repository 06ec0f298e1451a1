"""Token classification (NER) with BIO tags: each word is labelled at its first sub-word token; metrics are
entity-level precision, recall and F1 (exact span and type)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics import MetricCollection

from lmlab.data.synthetic import Document
from lmlab.data.text_files import inspect_text_file
from lmlab.errors import InputError
from lmlab.heads import IGNORE
from lmlab.models import Backbone, ModelConfig
from lmlab.tasks.base import TaskConfig, TaskFamily, TaskOutput, contextual
from lmlab.tasks.entities import EntityF1
from lmlab.tasks.examples import TaggedExample
from lmlab.tasks.readers import DataFileError, refuse_confusable_labels, rows, text_list_field
from lmlab.tasks.sources import label_names

_WORD = re.compile(r"\w+(?:[-']\w+)*|[^\w\s]")


@dataclass
class TokenClassificationConfig(TaskConfig):
    """Files: CoNLL-style column files (.conll / .txt: one token per line, a blank line between sentences; tokens in
    column conll_token_index, BIO tags in conll_tag_index) or .jsonl with token and tag lists."""

    family: str = "token_classification"
    token_column: str = "tokens"
    tag_column: str = "tags"
    conll_token_index: int = 0
    conll_tag_index: int = -1


class TokenClassification(TaskFamily):
    Config = TokenClassificationConfig
    main_metric = "f1"
    hf_head = "token_classification"

    @staticmethod
    def from_synthetic(cfg: TokenClassificationConfig, documents: list[Document]) -> list[TaggedExample]:
        return [tagged_words(d.text, d.entities) for d in documents]

    @staticmethod
    def read_file(cfg: TokenClassificationConfig, path: Path) -> list[TaggedExample]:
        if path.suffix.lower() in (".jsonl", ".json"):
            return read_tagged_jsonl(path, cfg.token_column, cfg.tag_column)
        return read_conll(path, cfg.conll_token_index, cfg.conll_tag_index)

    @staticmethod
    def hub_columns(cfg: TokenClassificationConfig) -> list[str]:
        return [cfg.token_column, cfg.tag_column]

    @staticmethod
    def from_hub(cfg: TokenClassificationConfig, data) -> list[TaggedExample]:
        names = label_names(data.features[cfg.tag_column].feature)
        return [TaggedExample(list(row[cfg.token_column]), [names(t) for t in row[cfg.tag_column]]) for row in data]

    @staticmethod
    def label_set(examples: list[TaggedExample]) -> list[str]:
        """ "O" first, then each entity type's B- and I- tags (both, even when the data lacks some I- tags)."""
        refuse_confusable_labels(sorted({t for e in examples for t in e.tags}), "the training tags")
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


def tagged_words(text: str, entities: list[tuple[int, int, str]]) -> TaggedExample:
    """Words (and punctuation) of `text` with BIO tags from character-span entities."""
    tokens: list[str] = []
    tags: list[str] = []
    for match in _WORD.finditer(text):
        tag = "O"
        for start, end, kind in entities:
            if start <= match.start() < end:
                tag = ("B-" if match.start() == start or not tags or tags[-1] == "O" else "I-") + kind
                break
        tokens.append(match.group())
        tags.append(tag)
    return TaggedExample(tokens, tags)


def read_conll(path: Path, token_column: int, tag_column: int) -> list[TaggedExample]:
    """Whitespace-separated columns, one token per line, a blank line between sentences; -DOCSTART- skipped."""
    inspect_text_file(path, "task data file")
    examples: list[TaggedExample] = []
    tokens: list[str] = []
    tags: list[str] = []
    with open(path, encoding="utf-8-sig") as f:
        for number, line in enumerate(f, start=1):
            columns = line.split()
            if not columns or columns[0] == "-DOCSTART-":
                if tokens:
                    examples.append(TaggedExample(tokens, tags))
                tokens, tags = [], []
                continue
            needed = max(token_column, tag_column) + 1 if min(token_column, tag_column) >= 0 else 1
            if len(columns) < needed or len(columns) < 2:
                raise DataFileError(path, number, f"expected at least {max(needed, 2)} columns, got {len(columns)}")
            tag = columns[tag_column]
            if tag != "O" and not (tag[:2] in ("B-", "I-") and len(tag) > 2):
                raise DataFileError(path, number, f"tag {tag!r} is not BIO (O, B-X or I-X)")
            tokens.append(columns[token_column])
            tags.append(tag)
    if tokens:
        examples.append(TaggedExample(tokens, tags))
    if not examples:
        raise InputError(f"task data file {path} holds no sentences")
    return examples


def read_tagged_jsonl(path: Path, token_column: str, tag_column: str) -> list[TaggedExample]:
    examples = []
    for line, row in rows(path):
        tokens, tags = text_list_field(path, line, row, token_column), text_list_field(path, line, row, tag_column)
        if len(tokens) != len(tags):
            raise DataFileError(path, line, f"{token_column!r} and {tag_column!r} must be lists of equal length")
        examples.append(TaggedExample(tokens, tags))
    return examples
