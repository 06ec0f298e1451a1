"""Entity-level precision, recall and F1 on BIO tags: an entity counts only if its type and exact span match."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torchmetrics import Metric


def bio_spans(tags: Sequence[str]) -> set[tuple[int, int, str]]:
    """(start, end exclusive, type) of each entity. An I-X that does not continue an X entity starts a new one
    (the lenient reading conlleval uses)."""
    spans: set[tuple[int, int, str]] = set()
    current: tuple[int, str] | None = None  # (start, type) of the entity being read
    for i, tag in enumerate([*tags, "O"]):
        prefix, _, label = tag.partition("-")
        continues = prefix == "I" and current is not None and current[1] == label
        if current is not None and not continues:
            spans.add((current[0], i, current[1]))
            current = None
        if prefix == "B" or (prefix == "I" and not continues):
            current = (i, label)
    return spans


class EntityF1(Metric):
    """Micro-averaged over entities; `update` takes lists of tag sequences. `compute` returns precision, recall
    and F1 in a dict."""

    full_state_update = False
    correct: torch.Tensor
    predicted: torch.Tensor
    gold: torch.Tensor

    def __init__(self) -> None:
        super().__init__()
        for name in ("correct", "predicted", "gold"):
            self.add_state(name, default=torch.tensor(0), dist_reduce_fx="sum")

    def update(self, predicted: Sequence[Sequence[str]], gold: Sequence[Sequence[str]]) -> None:
        for pred_tags, gold_tags in zip(predicted, gold, strict=True):
            pred, true = bio_spans(pred_tags), bio_spans(gold_tags)
            self.correct += len(pred & true)
            self.predicted += len(pred)
            self.gold += len(true)

    def compute(self) -> dict[str, torch.Tensor]:
        precision = self.correct / self.predicted.clamp(min=1)
        recall = self.correct / self.gold.clamp(min=1)
        f1 = 2 * precision * recall / (precision + recall).clamp(min=1e-12)
        return {"precision": precision.float(), "recall": recall.float(), "f1": f1.float()}
