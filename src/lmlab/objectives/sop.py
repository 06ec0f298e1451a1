"""Sentence-order prediction (ALBERT): MLM plus "are A and B in their original order?", where half the pairs
of consecutive segments are swapped. Unlike NSP, topic cues cannot give the answer away."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from lmlab.data.blocks import Block
from lmlab.objectives.sentence_pairs import PairConfig, Segments, SentencePairObjective, consecutive_segments


@dataclass
class SOPConfig(PairConfig):
    name: str = "sop"


class SentenceOrderPrediction(SentencePairObjective):
    Config = SOPConfig

    def segments(self, block: Block, budget: int, rng: np.random.Generator) -> tuple[Segments, bool]:
        pair = consecutive_segments(block, budget, rng)
        if rng.random() < 0.5:
            return pair, True
        return Segments(pair.b, pair.a), False


OBJECTIVE = SentenceOrderPrediction
