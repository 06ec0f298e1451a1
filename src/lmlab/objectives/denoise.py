"""BART denoising: permute the block's sentences and replace spans (Poisson lengths, some empty) by a single
[MASK] each; the encoder-decoder reconstructs the original block."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from lmlab.data.blocks import Block
from lmlab.data.tokenizer import MASK, TrainedTokenizer
from lmlab.errors import InputError
from lmlab.objectives.seq2seq import Seq2SeqObjective


@dataclass
class DenoiseConfig:
    name: str = "denoise"
    mask_ratio: float = 0.3  # fraction of tokens inside masked spans
    poisson_lambda: float = 3.0  # mean span length; a zero-length span inserts a [MASK]
    permute_sentences: bool = True

    def validate(self) -> None:
        if not 0.0 <= self.mask_ratio < 1.0:
            raise InputError(f"objective.mask_ratio must be in [0, 1), got {self.mask_ratio}")
        if self.poisson_lambda <= 0:
            raise InputError(f"objective.poisson_lambda must be > 0, got {self.poisson_lambda}")


def permute_sentences(
    tokens: np.ndarray, sentence_starts: np.ndarray, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """(permuted tokens, order): the sentences beginning at `sentence_starts` in a random order;
    sentence `order[i]` of the original is the i-th of the result."""
    sentences = np.split(tokens, sentence_starts[1:])
    order = rng.permutation(len(sentences))
    return np.concatenate([sentences[i] for i in order]), order


def infill(
    tokens: np.ndarray, mask_ratio: float, poisson_lambda: float, mask_id: int, rng: np.random.Generator
) -> tuple[np.ndarray, list[np.ndarray]]:
    """(noised, spans): spans with Poisson lengths covering round(mask_ratio * n) tokens are each replaced by
    one [MASK]; `spans[i]` holds what the i-th [MASK] of `noised` stands for (possibly nothing).

    Spans sit at distinct gaps between kept tokens, so no two are adjacent and the result is invertible. Empty
    spans are dropped while they would make the result longer than the input.
    """
    n = len(tokens)
    n_mask = int(round(n * mask_ratio))
    lengths: list[int] = []
    while sum(lengths) < n_mask:
        lengths.append(int(rng.poisson(poisson_lambda)))
    if lengths:
        lengths[-1] -= sum(lengths) - n_mask
    while len(lengths) > n_mask and 0 in lengths:  # keep len(noised) <= n
        lengths.remove(0)
    kept_count = n - n_mask
    if len(lengths) > kept_count + 1:  # more spans than gaps: merge the surplus into the last span
        lengths = lengths[:kept_count] + [sum(lengths[kept_count:])]
    order = rng.permutation(len(lengths))
    lengths = [lengths[i] for i in order]
    gaps = np.sort(rng.choice(kept_count + 1, size=len(lengths), replace=False))
    kept_runs = np.diff(np.concatenate([[0], gaps, [kept_count]]))  # kept tokens before each span, and after
    noised, spans, pos = [], [], 0
    for run, length in zip(kept_runs[:-1], lengths, strict=True):
        noised.append(tokens[pos : pos + run])
        pos += run
        noised.append(np.asarray([mask_id]))
        spans.append(tokens[pos : pos + length])
        pos += length
    noised.append(tokens[pos:])
    return np.concatenate(noised).astype(np.int64), spans


def fill(noised: np.ndarray, spans: list[np.ndarray], mask_id: int) -> np.ndarray:
    """The inverse of `infill`: each [MASK] replaced by its span."""
    pieces = np.split(noised, np.flatnonzero(noised == mask_id))
    out = [pieces[0]]
    for piece, span in zip(pieces[1:], spans, strict=True):
        out += [span, piece[1:]]
    return np.concatenate(out).astype(np.int64)


class Denoise(Seq2SeqObjective):
    Config = DenoiseConfig

    def __init__(self, cfg: DenoiseConfig, tokenizer: TrainedTokenizer) -> None:
        super().__init__(cfg, tokenizer)
        self.mask_id = tokenizer.token_id(MASK)

    def transform(self, block: Block, rng: np.random.Generator) -> dict[str, np.ndarray]:
        original = block.ids[: block.n_real]
        tokens = original
        if self.cfg.permute_sentences:
            tokens, _ = permute_sentences(original, block.sentence_starts(), rng)
        noised, _ = infill(tokens, self.cfg.mask_ratio, self.cfg.poisson_lambda, self.mask_id, rng)
        size = len(block.ids)
        return self.example(noised, np.append(original, self.eos_id), size, size + 1)


OBJECTIVE = Denoise
