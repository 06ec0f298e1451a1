"""Extractive question answering (SQuAD): predict the answer's start and end token in the context.

An input is [CLS] question [SEP] context window [SEP]. A context longer than the room left by the question is
split into windows `doc_stride` tokens apart; a window that does not hold the whole answer is trained to point
at [CLS] (SQuAD v1.1 practice). Evaluation takes, per question, the best-scoring span of at most
`max_answer_length` tokens inside any window's context and scores its text with SQuAD's exact match and F1.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics import MetricCollection

from lmlab.config_schema import at_least
from lmlab.data.synthetic import Document
from lmlab.data.text_files import inspect_text_file
from lmlab.errors import InputError
from lmlab.models import Backbone, ModelConfig
from lmlab.tasks.base import TaskConfig, TaskFamily, TaskOutput, contextual
from lmlab.tasks.examples import QAExample
from lmlab.tasks.readers import DataFileError
from lmlab.tasks.squad_metric import SquadScore

NO_OFFSET = -1


@dataclass
class ExtractiveQAConfig(TaskConfig):
    """Files: SQuAD-format .json. Hub: SQuAD's columns. Question tokens kept, tokens between context windows' starts,
    longest answer predicted."""

    family: str = "extractive_qa"
    question_column: str = "question"
    context_column: str = "context"
    answers_column: str = "answers"
    max_question_length: int = 64
    doc_stride: int = 128
    max_answer_length: int = 30

    def validate(self) -> None:
        super().validate()
        room = self.max_length - self.max_question_length - 3
        if not 1 <= self.doc_stride <= room:
            raise InputError(
                f"task.doc_stride={self.doc_stride} must be in [1, {room}]: the context room that task.max_length="
                f"{self.max_length} leaves after task.max_question_length={self.max_question_length} and 3 "
                "special tokens (a larger stride would skip context)"
            )
        at_least("task.max_answer_length", self.max_answer_length, 1)


class ExtractiveQA(TaskFamily):
    Config = ExtractiveQAConfig
    main_metric = "f1"
    hf_head = "question_answering"

    @staticmethod
    def from_synthetic(cfg: ExtractiveQAConfig, documents: list[Document]) -> list[QAExample]:
        return [QAExample(q, d.text, [answer], [start]) for d in documents for q, answer, start in d.facts]

    @staticmethod
    def read_file(cfg: ExtractiveQAConfig, path: Path) -> list[QAExample]:
        return read_squad(path)

    @staticmethod
    def hub_columns(cfg: ExtractiveQAConfig) -> list[str]:
        return [cfg.question_column, cfg.context_column, cfg.answers_column]

    @staticmethod
    def from_hub(cfg: ExtractiveQAConfig, data) -> list[QAExample]:
        unanswerable = sum(1 for row in data if not row[cfg.answers_column]["text"])
        if unanswerable:
            raise InputError(
                f"task.hub_path={cfg.hub_path}: {unanswerable} of {len(data)} questions of a split have no answer "
                "(SQuAD v2 unanswerables are not supported); filter them out and pass the saved dataset"
            )
        answers = cfg.answers_column
        return [
            QAExample(
                row[cfg.question_column],
                row[cfg.context_column],
                list(row[answers]["text"]),
                list(row[answers]["answer_start"]),
            )
            for row in data
        ]

    @staticmethod
    def label_set(examples: list[QAExample]) -> list[str]:
        return []

    def encode(self, example: QAExample) -> dict[str, np.ndarray]:
        """The first window of `example` (see `windows`)."""
        return self.windows(example, 0)[0]

    def features(self, examples: list[QAExample]) -> list[dict[str, np.ndarray]]:
        return [window for i, example in enumerate(examples) for window in self.windows(example, i)]

    def windows(self, example: QAExample, index: int) -> list[dict[str, np.ndarray]]:
        tok = self.tokenizer.tokenizer
        question = tok.encode(example.question, add_special_tokens=False).ids[: self.cfg.max_question_length]
        context = tok.encode(example.context, add_special_tokens=False)
        room = self.cfg.max_length - len(question) - 3
        answer_start = example.answer_starts[0]
        answer_end = answer_start + len(example.answers[0])
        # The answer's first and last context token: those whose characters overlap it.
        inside = [i for i, (s, e) in enumerate(context.offsets) if s < answer_end and e > answer_start]
        out = []
        start = 0
        while True:
            piece = range(start, min(start + room, len(context.ids)))
            ids = [self.cls_id, *question, self.sep_id, *context.ids[piece.start : piece.stop], self.sep_id]
            first = len(question) + 2  # where the window's context begins in `ids`
            offsets = np.full((self.cfg.max_length, 2), NO_OFFSET, dtype=np.int64)
            offsets[first : first + len(piece)] = context.offsets[piece.start : piece.stop]
            start_label = end_label = 0
            if inside and inside[0] in piece and inside[-1] in piece:
                start_label, end_label = first + inside[0] - piece.start, first + inside[-1] - piece.start
            segments = {"segment_ids": [0] * first + [1] * (len(ids) - first)} if self.segments else None
            window = self._pad(ids, segments)
            window.update(
                offsets=offsets,
                start_positions=np.asarray(start_label),
                end_positions=np.asarray(end_label),
                example_index=np.asarray(index),
            )
            out.append(window)
            if piece.stop >= len(context.ids):
                return out
            start += self.cfg.doc_stride

    def build_head(self, model_cfg: ModelConfig) -> nn.Module:
        return nn.Linear(model_cfg.d_model, 2)

    def forward(self, backbone: Backbone, head: nn.Module, batch: dict[str, torch.Tensor]) -> TaskOutput:
        logits = head(contextual(backbone, batch)).float()  # (B, T, 2): start and end
        start_logits, end_logits = logits.unbind(-1)
        loss = (
            F.cross_entropy(start_logits, batch["start_positions"])
            + F.cross_entropy(end_logits, batch["end_positions"])
        ) / 2
        return TaskOutput(loss, logits)

    def best_spans(self, logits: torch.Tensor, offsets: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Per window: the score, first and last token of the best span inside the context whose length is at
        most `max_answer_length` tokens."""
        start_logits, end_logits = logits.unbind(-1)
        in_context = offsets[..., 0] != NO_OFFSET
        length = torch.arange(logits.shape[1], device=logits.device)
        gap = length[None, :] - length[:, None]  # end - start
        allowed = (gap >= 0) & (gap < self.cfg.max_answer_length)
        allowed = allowed[None] & in_context[:, :, None] & in_context[:, None, :]
        scores = (start_logits[:, :, None] + end_logits[:, None, :]).masked_fill(~allowed, float("-inf"))
        best, flat = scores.flatten(1).max(-1)
        return best, flat // logits.shape[1], flat % logits.shape[1]

    def metrics(self, examples: list[QAExample]) -> MetricCollection:
        return MetricCollection({"squad": SquadScore([(e.context, e.answers) for e in examples])})

    def update_metrics(self, metrics: MetricCollection, out: TaskOutput, batch: dict[str, torch.Tensor]) -> None:
        score, first, last = self.best_spans(out.predictions, batch["offsets"])
        rows = torch.arange(score.shape[0], device=score.device)
        start_char, end_char = batch["offsets"][rows, first, 0], batch["offsets"][rows, last, 1]
        metrics["squad"].update(batch["example_index"], score, start_char, end_char)


FAMILY = ExtractiveQA


def read_squad(path: Path) -> list[QAExample]:
    """SQuAD-format json: {"data": [{"paragraphs": [{"context", "qas": [{"question", "answers": [{"text",
    "answer_start"}]}]}]}]}. Every answer must appear in its context at its answer_start."""
    inspect_text_file(path, "task data file", max_line_bytes=None)  # SQuAD files are often one long line
    try:
        document = json.loads(path.read_text(encoding="utf-8-sig"))
    except json.JSONDecodeError as err:
        raise DataFileError(path, err.lineno, f"not valid JSON ({err.msg})") from err
    examples = []
    try:
        for i, article in enumerate(document["data"]):
            for j, paragraph in enumerate(article["paragraphs"]):
                context = paragraph["context"]
                for k, qa in enumerate(paragraph["qas"]):
                    where = f"data[{i}].paragraphs[{j}].qas[{k}]"
                    answers = [(str(a["text"]), int(a["answer_start"])) for a in qa["answers"]]
                    for text, start in answers:
                        if context[start : start + len(text)] != text:
                            raise InputError(f"{path}: {where}: answer {text!r} is not at answer_start {start}")
                    if not answers:
                        raise InputError(f"{path}: {where}: no answers (SQuAD v2 unanswerables are not supported)")
                    examples.append(QAExample(qa["question"], context, *map(list, zip(*answers, strict=True))))
    except (KeyError, TypeError) as err:
        raise InputError(f"{path}: not SQuAD format (expected data[].paragraphs[].qas[].answers[]): {err!r}") from err
    if not examples:
        raise InputError(f"task data file {path} holds no questions")
    return examples
