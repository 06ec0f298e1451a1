"""T5 span corruption: drop random spans (noise density, mean span length), replace each by a sentinel, and have
the encoder-decoder reconstruct the dropped spans, each introduced by its sentinel."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

import numpy as np

from lmlab.data.blocks import Block
from lmlab.data.tokenizer import TrainedTokenizer
from lmlab.errors import InputError
from lmlab.objectives.seq2seq import Seq2SeqObjective


@dataclass
class SpanConfig:
    name: str = "span"
    noise_density: float = 0.15
    mean_span_length: float = 3.0

    def validate(self) -> None:
        if not 0.0 < self.noise_density < 1.0:
            raise InputError(f"objective.noise_density must be in (0, 1), got {self.noise_density}")
        if self.mean_span_length < 1.0:
            raise InputError(f"objective.mean_span_length must be >= 1, got {self.mean_span_length}")


def span_counts(n: int, noise_density: float, mean_span_length: float) -> tuple[int, int]:
    """(noise tokens, spans) for a sequence of n tokens, as T5 computes them (at least one of each kind)."""
    n_noise = min(max(int(round(n * noise_density)), 1), n - 1)
    n_spans = max(int(round(n_noise / mean_span_length)), 1)
    return n_noise, min(n_spans, n_noise, n - n_noise)


def _random_partition(total: int, parts: int, rng: np.random.Generator) -> np.ndarray:
    """`parts` positive integers summing to `total`, uniformly over such compositions."""
    cuts = np.sort(rng.choice(np.arange(1, total), size=parts - 1, replace=False))
    return np.diff(np.concatenate([[0], cuts, [total]])).astype(np.int64)


def noise_spans(n: int, noise_density: float, mean_span_length: float, rng: np.random.Generator) -> np.ndarray:
    """(n,) bool noise mask: kept and noise runs alternate, starting with kept tokens (T5's random_spans_noise_mask)."""
    if n < 2:
        return np.zeros(n, dtype=bool)
    n_noise, n_spans = span_counts(n, noise_density, mean_span_length)
    noise = _random_partition(n_noise, n_spans, rng)
    kept = _random_partition(n - n_noise, n_spans, rng)
    runs = np.stack([kept, noise], axis=1).ravel()
    return np.repeat(np.tile([False, True], n_spans), runs)


def corrupt(tokens: np.ndarray, mask: np.ndarray, sentinels: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """(source, target): the source has each noise span replaced by the next sentinel; the target lists each
    sentinel followed by the tokens it replaced."""
    starts = mask & ~np.concatenate([[False], mask[:-1]])
    n_spans = int(starts.sum())
    if n_spans > len(sentinels):
        raise InputError(
            f"{n_spans} noise spans but only {len(sentinels)} sentinel tokens; raise data.tokenizer.sentinels, "
            "or lower data.block_size or objective.noise_density, or raise objective.mean_span_length"
        )
    source = tokens.copy()
    source[starts] = sentinels[:n_spans]
    source = source[~mask | starts]
    target = np.insert(tokens[mask], np.flatnonzero(starts[mask]), sentinels[:n_spans])
    return source.astype(np.int64), target.astype(np.int64)


@cache
def span_lengths(block_size: int, noise_density: float, mean_span_length: float) -> tuple[int, int]:
    """Fixed (source, target) lengths that fit any block of up to `block_size` real tokens, plus [SEP] each."""
    sizes = range(1, block_size + 1)
    counts = [span_counts(n, noise_density, mean_span_length) if n > 1 else (0, 0) for n in sizes]
    source = max(n - noise + spans for n, (noise, spans) in zip(sizes, counts, strict=True))
    target = max(noise + spans for noise, spans in counts)
    return source + 1, target + 1


class SpanCorruption(Seq2SeqObjective):
    Config = SpanConfig

    def __init__(self, cfg: SpanConfig, tokenizer: TrainedTokenizer) -> None:
        super().__init__(cfg, tokenizer)
        self.sentinels = tokenizer.sentinel_ids
        if not self.sentinels:
            raise InputError("objective=span needs sentinel tokens; set data.tokenizer.sentinels > 0")

    def transform(self, block: Block, rng: np.random.Generator) -> dict[str, np.ndarray]:
        tokens = block.ids[: block.n_real]
        mask = noise_spans(len(tokens), self.cfg.noise_density, self.cfg.mean_span_length, rng)
        source, target = corrupt(tokens, mask, self.sentinels)
        source_len, target_len = span_lengths(len(block.ids), self.cfg.noise_density, self.cfg.mean_span_length)
        return self.example(np.append(source, self.eos_id), np.append(target, self.eos_id), source_len, target_len)


OBJECTIVE = SpanCorruption
