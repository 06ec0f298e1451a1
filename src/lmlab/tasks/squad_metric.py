"""SQuAD's answer scoring: exact match and token F1 after normalisation (lower case, no punctuation, no articles,
single spaces), each the best over the gold answers; and a metric that picks each question's best-scoring span
across its context windows before scoring it."""

from __future__ import annotations

import re
import string
from collections import Counter
from collections.abc import Sequence

import torch
from torchmetrics import Metric

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCTUATION = set(string.punctuation)


def normalize_answer(text: str) -> str:
    text = "".join(ch for ch in text.lower() if ch not in _PUNCTUATION)
    return " ".join(_ARTICLES.sub(" ", text).split())


def exact_match(prediction: str, gold: Sequence[str]) -> float:
    return max(float(normalize_answer(prediction) == normalize_answer(g)) for g in gold)


def token_f1(prediction: str, gold: Sequence[str]) -> float:
    return max(_f1(normalize_answer(prediction).split(), normalize_answer(g).split()) for g in gold)


def _f1(predicted: list[str], true: list[str]) -> float:
    if not predicted or not true:
        return float(predicted == true)
    common = sum((Counter(predicted) & Counter(true)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(predicted), common / len(true)
    return 2 * precision * recall / (precision + recall)


class SquadScore(Metric):
    """`update` takes, per context window, its question's index, the window's best span score and the span's
    character offsets; `compute` keeps each question's best window and returns mean exact match and F1 (in %
    of 1, like every other metric here). A question no window answered scores 0."""

    full_state_update = False
    example: list[torch.Tensor]
    score: list[torch.Tensor]
    start: list[torch.Tensor]
    end: list[torch.Tensor]

    def __init__(self, references: Sequence[tuple[str, Sequence[str]]]) -> None:
        """references[i] = (context, gold answers) of question i."""
        super().__init__()
        self.references = list(references)
        for name in ("example", "score", "start", "end"):
            self.add_state(name, default=[], dist_reduce_fx="cat")

    def update(self, example: torch.Tensor, score: torch.Tensor, start: torch.Tensor, end: torch.Tensor) -> None:
        self.example.append(example.long())
        self.score.append(score.float())
        self.start.append(start.long())
        self.end.append(end.long())

    def compute(self) -> dict[str, torch.Tensor]:
        best: dict[int, tuple[float, int, int]] = {}
        if self.example:
            rows = zip(*(torch.cat(s).tolist() for s in (self.example, self.score, self.start, self.end)), strict=True)
            for example, score, start, end in rows:
                if example not in best or score > best[example][0]:
                    best[example] = (score, start, end)
        em = f1 = 0.0
        for i, (context, gold) in enumerate(self.references):
            if i in best:
                predicted = context[best[i][1] : best[i][2]]
                em += exact_match(predicted, gold)
                f1 += token_f1(predicted, gold)
        n = max(len(self.references), 1)
        return {"em": torch.tensor(em / n), "f1": torch.tensor(f1 / n)}
