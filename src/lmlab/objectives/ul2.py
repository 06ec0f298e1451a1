"""UL2 (Tay et al. 2022): a mixture of denoisers on the encoder-decoder, each example drawn from one of them and
tagged with its paradigm token — R (regular span corruption, [NLU]), X (extreme: long spans or high density,
[NLG]) and S (sequential: prefix -> continuation, [S2S])."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from lmlab.data.blocks import Block
from lmlab.data.tokenizer import NLG, NLU, S2S, TrainedTokenizer
from lmlab.errors import InputError
from lmlab.objectives.seq2seq import Seq2SeqObjective
from lmlab.objectives.span import corrupt, noise_spans

MODES = {"R": NLU, "X": NLG, "S": S2S}


@dataclass
class Denoiser:
    mode: str = "R"
    weight: float = 1.0
    # R and X only: the span corruption's settings.
    noise_density: float = 0.15
    mean_span_length: float = 3.0


def _default_denoisers() -> list[Denoiser]:
    """The UL2 paper's mixture: two R, four X and one S denoiser."""
    return [
        Denoiser("R", 0.2, 0.15, 3.0),
        Denoiser("R", 0.2, 0.15, 8.0),
        Denoiser("X", 0.1, 0.5, 3.0),
        Denoiser("X", 0.1, 0.5, 8.0),
        Denoiser("X", 0.1, 0.15, 64.0),
        Denoiser("X", 0.1, 0.5, 64.0),
        Denoiser("S", 0.2),
    ]


@dataclass
class UL2Config:
    name: str = "ul2"
    denoisers: list[Denoiser] = field(default_factory=_default_denoisers)

    def validate(self) -> None:
        if not self.denoisers:
            raise InputError("objective.denoisers is empty; give at least one {mode, weight, ...}")
        for i, d in enumerate(self.denoisers):
            if d.mode not in MODES:
                raise InputError(f"objective.denoisers[{i}].mode={d.mode!r}; expected one of {list(MODES)}")
            if d.weight <= 0 or not 0.0 < d.noise_density < 1.0 or d.mean_span_length < 1.0:
                raise InputError(
                    f"objective.denoisers[{i}] needs weight > 0, 0 < noise_density < 1 and mean_span_length >= 1"
                )


class UL2(Seq2SeqObjective):
    Config = UL2Config
    mode_token = S2S  # generating is its sequence-to-sequence mode

    def __init__(self, cfg: UL2Config, tokenizer: TrainedTokenizer) -> None:
        super().__init__(cfg, tokenizer)
        self.mode_ids = {mode: tokenizer.token_id(token) for mode, token in MODES.items()}
        self.sentinels = tokenizer.sentinel_ids
        weights = np.asarray([d.weight for d in cfg.denoisers], dtype=np.float64)
        self.probs = weights / weights.sum()

    def transform(self, block: Block, rng: np.random.Generator) -> dict[str, np.ndarray]:
        denoiser = self.cfg.denoisers[int(rng.choice(len(self.probs), p=self.probs))]
        tokens = block.ids[: block.n_real]
        if denoiser.mode == "S":
            split = int(rng.integers(1, max(2, len(tokens))))
            source, target = tokens[:split], tokens[split:]
        else:
            mask = noise_spans(len(tokens), denoiser.noise_density, denoiser.mean_span_length, rng)
            source, target = corrupt(tokens, mask, self.sentinels)
        size = len(block.ids)
        source = np.concatenate([[self.mode_ids[denoiser.mode]], source, [self.eos_id]])
        return self.example(source, np.append(target, self.eos_id), size + 2, size + 1)


OBJECTIVE = UL2
