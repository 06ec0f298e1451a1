"""Generation metrics on decoded text: ROUGE-1/2/L F-measure (summarisation) and corpus BLEU-4 (translation),
computed by torchmetrics against the references of the evaluated examples."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torchmetrics import Metric
from torchmetrics.text import BLEUScore
from torchmetrics.text.rouge import ROUGEScore

ROUGE_KEYS = ("rouge1", "rouge2", "rougeL")


class GenerationScore(Metric):
    """`update(example_indices, predicted_texts)`; `compute` returns rouge1, rouge2, rougeL (F-measure) and bleu."""

    full_state_update = False

    def __init__(self, references: Sequence[str]) -> None:
        super().__init__()
        self.references = list(references)
        self.rouge = ROUGEScore(rouge_keys=ROUGE_KEYS)
        self.bleu = BLEUScore(n_gram=4)

    def update(self, example: torch.Tensor, predicted: Sequence[str]) -> None:
        targets = [self.references[int(i)] for i in example]
        self.rouge.update(list(predicted), targets)
        self.bleu.update(list(predicted), [[t] for t in targets])

    def compute(self) -> dict[str, torch.Tensor]:
        rouge = self.rouge.compute()
        return {**{key: rouge[f"{key}_fmeasure"] for key in ROUGE_KEYS}, "bleu": self.bleu.compute()}

    def reset(self) -> None:
        super().reset()
        self.rouge.reset()
        self.bleu.reset()
