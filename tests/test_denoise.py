"""BART denoising: infilling and sentence permutation are invertible, and the target is the original block."""

from __future__ import annotations

import numpy as np
import pytest

from lmlab.data.blocks import example_rng
from lmlab.heads import IGNORE
from lmlab.objectives import build_objective
from lmlab.objectives.denoise import fill, infill, permute_sentences


@pytest.mark.parametrize("ratio, lam", [(0.3, 3.0), (0.5, 1.0), (0.1, 6.0), (0.0, 3.0)])
def test_infilling_is_invertible_never_longer_and_masks_the_ratio(ratio, lam):
    masked = total = 0
    for seed in range(400):
        rng = np.random.default_rng(seed)
        tokens = np.arange(10, 10 + int(rng.integers(1, 100)))
        noised, spans = infill(tokens, ratio, lam, mask_id=1, rng=rng)
        assert len(noised) <= len(tokens)
        assert (noised == 1).sum() == len(spans)
        assert np.array_equal(fill(noised, spans, mask_id=1), tokens)
        masked += sum(len(s) for s in spans)
        total += len(tokens)
    assert masked / total == pytest.approx(ratio, abs=0.01)


def test_span_lengths_are_poisson_including_empty_insertions():
    lengths = []
    for seed in range(300):
        _, spans = infill(np.arange(10, 138), 0.3, 3.0, mask_id=1, rng=np.random.default_rng(seed))
        lengths += [len(s) for s in spans[:-1]]  # the last span is trimmed to the budget
    assert np.mean(lengths) == pytest.approx(3.0, abs=0.3)
    assert 0 in lengths


def test_sentence_permutation_is_invertible():
    tokens = np.arange(10, 40)
    starts = np.array([0, 4, 11, 20, 27])
    permuted, order = permute_sentences(tokens, starts, np.random.default_rng(3))
    sentences = np.split(tokens, starts[1:])
    assert np.array_equal(permuted, np.concatenate([sentences[i] for i in order]))
    lengths = [len(sentences[i]) for i in order]
    pieces = np.split(permuted, np.cumsum(lengths)[:-1])
    assert np.array_equal(np.concatenate([pieces[list(order).index(k)] for k in range(len(order))]), tokens)


def test_transform_targets_the_original_and_keeps_each_sentence_intact(tokenizer, synthetic_data):
    denoise = build_objective({"name": "denoise", "mask_ratio": 0.0}, tokenizer)
    blocks = synthetic_data.blocks("train")
    moved = 0
    for i in range(50):
        block = blocks[i]
        out = denoise.transform(block, example_rng(0, 0, i))
        original = block.ids[: block.n_real]
        target = out["labels"][out["labels"] != IGNORE]
        assert np.array_equal(target, np.append(original, denoise.eos_id))
        source = out["input_ids"][: int(out["n_real"])]
        assert sorted(source.tolist()) == sorted(original.tolist())  # the same tokens, sentences reordered
        for sentence in np.split(original, block.sentence_starts()[1:]):
            assert sentence.tobytes() in source.tobytes(), "a sentence was broken up"
        moved += not np.array_equal(source, original)
    assert moved > 30


def test_noised_input_masks_about_the_ratio(tokenizer, synthetic_data):
    denoise = build_objective({"name": "denoise"}, tokenizer)
    out = denoise.transform(synthetic_data.blocks("train")[0], example_rng(0, 0, 0))
    assert (out["input_ids"] == denoise.mask_id).sum() >= 2
    assert int(out["n_real"]) < 64
