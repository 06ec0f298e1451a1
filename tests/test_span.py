"""T5 span corruption: realised noise density and span length, and exact reconstruction from the targets."""

from __future__ import annotations

import numpy as np
import pytest

from lmlab.data.blocks import Block, example_rng
from lmlab.heads import IGNORE
from lmlab.objectives import build_objective
from lmlab.objectives.span import noise_spans, span_lengths


def _reconstruct(source: np.ndarray, target: np.ndarray, sentinels: list[int]) -> np.ndarray:
    """Put each sentinel's span (from the target) back in place of the sentinel in the source."""
    is_sentinel = np.isin(target, sentinels)
    spans = dict(zip(target[is_sentinel], np.split(target, np.flatnonzero(is_sentinel))[1:], strict=True))
    return np.concatenate([spans[t][1:] if t in spans else [t] for t in source])


@pytest.mark.parametrize("density, mean_length", [(0.15, 3.0), (0.5, 3.0), (0.15, 8.0), (0.3, 1.0)])
def test_realised_noise_density_and_span_length_match_the_config(density, mean_length):
    noise = spans = total = 0
    for seed in range(300):
        mask = noise_spans(512, density, mean_length, np.random.default_rng(seed))
        noise += mask.sum()
        spans += (mask & ~np.concatenate([[False], mask[:-1]])).sum()
        total += len(mask)
    assert noise / total == pytest.approx(density, abs=0.01)
    assert noise / spans == pytest.approx(mean_length, rel=0.1)


def test_span_lengths_vary_and_spans_never_touch():
    lengths = set()
    for seed in range(100):
        mask = noise_spans(64, 0.15, 3.0, np.random.default_rng(seed))
        runs = np.diff(np.flatnonzero(np.diff(np.concatenate([[0], mask.astype(int), [0]]))))[::2]
        lengths |= set(runs.tolist())
        assert not mask[0], "T5 starts with kept tokens"
    assert len(lengths) > 3


def test_targets_reconstruct_the_dropped_spans_exactly(tokenizer, synthetic_data):
    span = build_objective({"name": "span"}, tokenizer)
    blocks = synthetic_data.blocks("train")
    source_len, target_len = span_lengths(64, 0.15, 3.0)
    for i in range(200):
        block = blocks[i % len(blocks)]
        out = span.transform(block, example_rng(0, 0, i))
        assert out["input_ids"].shape == (source_len,) and out["labels"].shape == (target_len,)
        source = out["input_ids"][: int(out["n_real"])]
        target = out["labels"][out["labels"] != IGNORE]
        assert source[-1] == span.eos_id and target[-1] == span.eos_id
        restored = _reconstruct(source[:-1], target[:-1], span.sentinels)
        assert np.array_equal(restored, block.ids[: block.n_real])
        # the decoder reads the target shifted right behind [CLS]
        assert out["decoder_input_ids"][0] == span.start_id
        assert np.array_equal(out["decoder_input_ids"][1 : len(target)], target[:-1])


def test_too_few_sentinels_is_a_clear_error(tokenizer):
    span = build_objective({"name": "span", "noise_density": 0.5, "mean_span_length": 1.0}, tokenizer)
    with pytest.raises(ValueError, match="sentinel tokens"):
        span.transform(Block.of(np.arange(10, 500)), example_rng(0, 0, 0))


def test_last_short_block_still_fits(tokenizer):
    span = build_objective({"name": "span"}, tokenizer)
    for n in (1, 2, 5):
        ids = np.zeros(64, dtype=np.int64)
        ids[:n] = np.arange(10, 10 + n)
        out = span.transform(Block.of(ids, n_real=n), example_rng(0, 0, n))
        assert out["input_ids"].shape == (span_lengths(64, 0.15, 3.0)[0],)
