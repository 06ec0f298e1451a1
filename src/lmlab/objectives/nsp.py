"""Next-sentence prediction (BERT): MLM plus "does B follow A?", where half the B segments come from another
document."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from lmlab.data.blocks import Block
from lmlab.errors import InputError
from lmlab.objectives.sentence_pairs import (
    PairConfig,
    Segments,
    SentencePairObjective,
    consecutive_segments,
    random_segment,
)


@dataclass
class NSPConfig(PairConfig):
    name: str = "nsp"
    random_next_prob: float = 0.5

    def validate(self) -> None:
        super().validate()
        if not 0.0 <= self.random_next_prob <= 1.0:
            raise InputError(f"objective.random_next_prob must be in [0, 1], got {self.random_next_prob}")


class NextSentencePrediction(SentencePairObjective):
    Config = NSPConfig

    def segments(self, block: Block, budget: int, rng: np.random.Generator) -> tuple[Segments, bool]:
        pair = consecutive_segments(block, budget, rng)
        if rng.random() >= self.cfg.random_next_prob:
            return pair, True
        length = budget - min(pair.a[1] - pair.a[0], budget // 2)
        return Segments(pair.a, random_segment(block.stream, pair.a, length, rng)), False


OBJECTIVE = NextSentencePrediction
