"""Masking statistics and reproducibility of the MLM batch transform."""

from __future__ import annotations

import numpy as np
import pytest

from lmlab.data.blocks import Block, example_rng
from lmlab.data.tokenizer import MASK, TrainedTokenizer
from lmlab.heads import IGNORE
from lmlab.objectives import build_objective


@pytest.fixture(scope="module")
def mlm(tokenizer: TrainedTokenizer):
    return build_objective({"name": "mlm"}, tokenizer)


@pytest.fixture(scope="module")
def stream(synthetic_data) -> np.ndarray:
    return synthetic_data.splits["train"].stream.slice(0, synthetic_data.splits["train"].n_tokens)


def _stats(mlm, stream: np.ndarray, n_blocks: int = 300, block: int = 64, epoch: int = 0):
    selected = masked = randomised = kept = candidates = 0
    for i in range(n_blocks):
        ids = stream[i * block : (i + 1) * block]
        out = mlm.transform(Block.of(ids), example_rng(0, epoch, i))
        sel = out["labels"] != IGNORE
        assert np.array_equal(out["labels"][sel], ids[sel]), "labels must be the original tokens"
        assert not mlm.is_special[ids[sel]].any(), "a special token was selected"
        selected += sel.sum()
        candidates += (~mlm.is_special[ids]).sum()
        masked += (out["input_ids"][sel] == mlm.mask_id).sum()
        changed = sel & (out["input_ids"] != ids) & (out["input_ids"] != mlm.mask_id)
        randomised += changed.sum()
        kept += (sel & (out["input_ids"] == ids)).sum()
        assert np.array_equal(out["input_ids"][~sel], ids[~sel]), "unselected positions must be unchanged"
    return selected / candidates, masked / selected, randomised / selected, kept / selected


def test_selection_rate_and_80_10_10_split(mlm, stream):
    rate, masked, randomised, kept = _stats(mlm, stream)
    assert rate == pytest.approx(0.15, abs=0.01)
    assert masked == pytest.approx(0.8, abs=0.02)
    # A random replacement can draw the original token (1/vocab), which then counts as kept.
    assert randomised == pytest.approx(0.1, abs=0.015)
    assert kept == pytest.approx(0.1, abs=0.015)


def test_configured_mask_prob_is_respected(tokenizer, stream):
    mlm = build_objective({"name": "mlm", "mask_prob": 0.4}, tokenizer)
    rate, *_ = _stats(mlm, stream, n_blocks=100)
    assert rate == pytest.approx(0.4, abs=0.02)


def test_special_tokens_never_selected(mlm, tokenizer):
    specials = np.array(tokenizer.special_ids * 40, dtype=np.int64)
    out = mlm.transform(Block.of(specials), example_rng(0, 0, 0))
    assert (out["labels"] == IGNORE).all()
    assert np.array_equal(out["input_ids"], specials)
    assert tokenizer.token_id(MASK) in tokenizer.special_ids


def test_same_seed_epoch_index_gives_same_mask_and_next_epoch_differs(mlm, stream):
    ids = stream[:64]
    a = mlm.transform(Block.of(ids), example_rng(7, 0, 3))
    b = mlm.transform(Block.of(ids), example_rng(7, 0, 3))
    assert all(np.array_equal(a[k], b[k]) for k in a)
    next_epoch = mlm.transform(Block.of(ids), example_rng(7, 1, 3))
    other_seed = mlm.transform(Block.of(ids), example_rng(8, 0, 3))
    assert not np.array_equal(a["labels"], next_epoch["labels"])
    assert not np.array_equal(a["labels"], other_seed["labels"])


def test_whole_word_masking_selects_every_piece_of_a_word_and_keeps_the_rate(tokenizer):
    wwm = build_objective({"name": "mlm", "whole_word": True}, tokenizer)
    continues = tokenizer.word_continuations()
    text = "the unbelievably overcautious metallurgists reconsidered photosynthesis " * 20
    ids = np.asarray(tokenizer.tokenizer.encode(text, add_special_tokens=False).ids, dtype=np.int64)
    assert continues[ids].any(), "the test text must contain multi-piece words"
    word = np.cumsum(~continues[ids]) - 1
    selected = candidates = 0
    for i in range(300):
        sel = wwm.transform(Block.of(ids), example_rng(0, 0, i))["labels"] != IGNORE
        for w in np.unique(word[sel]):
            assert sel[word == w].all(), "a word was only partly selected"
        selected += len(np.unique(word[sel]))
        candidates += word[-1] + 1
    assert selected / candidates == pytest.approx(0.15, abs=0.01)


@pytest.mark.parametrize(
    "bad, message",
    [
        ({"mask_prob": 1.5}, "mask_prob"),
        ({"mask_token_frac": 0.95}, "sum to <= 1"),
        ({"mask_rate": 0.1}, "mask_rate"),
    ],
)
def test_bad_objective_config_is_refused(tokenizer, bad, message):
    with pytest.raises(ValueError, match=message):
        build_objective({"name": "mlm", **bad}, tokenizer)


def test_unknown_objective_lists_available(tokenizer):
    with pytest.raises(ValueError, match=r"available: \[.*'mlm'"):
        build_objective({"name": "nope"}, tokenizer)
