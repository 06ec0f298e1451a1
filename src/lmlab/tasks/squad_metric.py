"""SQuAD's answer scoring across context windows: each question's answer is the best-scoring span over all its
windows; exact match and token F1 of that answer against the gold answers are torchmetrics' SQuAD (SQuAD v1.1's
normalisation and the best over the gold answers)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torchmetrics import Metric
from torchmetrics.functional.text import squad


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
        predictions: list[dict[str, str]] = []
        targets: list[dict[str, str | dict[str, list[str] | list[int]]]] = []
        for i, (context, gold) in enumerate(self.references):
            answer = context[best[i][1] : best[i][2]] if i in best else ""  # unanswered: scores 0
            predictions.append({"prediction_text": answer, "id": str(i)})
            targets.append({"answers": {"answer_start": [0] * len(gold), "text": list(gold)}, "id": str(i)})
        if not targets:
            return {"em": torch.tensor(0.0), "f1": torch.tensor(0.0)}
        scores = squad(predictions, targets)  # in percent
        return {"em": scores["exact_match"].float() / 100, "f1": scores["f1"].float() / 100}
