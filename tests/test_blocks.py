"""Packing, the epoch-aware sampler and batch collation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lmlab.data.blocks import Block, BlockDataset, EpochSampler, PackedBlocks, TokenStream, collate


@pytest.mark.parametrize("n_tokens, block", [(1000, 64), (1024, 64), (5, 64), (64, 64)])
def test_packing_keeps_every_token_exactly_once(n_tokens, block):
    stream = np.arange(n_tokens, dtype=np.uint16) + 10
    blocks = PackedBlocks(TokenStream.single_document(stream), block, pad_id=0)
    pieces = [(b.ids, b.n_real) for b in (blocks[i] for i in range(len(blocks)))]
    real = np.concatenate([ids[:n_real] for ids, n_real in pieces])
    assert np.array_equal(real, stream)
    assert all(len(ids) == block for ids, _ in pieces)
    assert all(n_real == block for _, n_real in pieces[:-1])
    last_ids, last_real = pieces[-1]
    assert (last_ids[last_real:] == 0).all()


def test_packed_blocks_on_real_cache_respect_document_separators(synthetic_data, tokenizer):
    stream = synthetic_data.splits["train"].stream
    assert stream.n_shards == 4  # shards of 64 documents
    sep = tokenizer.token_id("[SEP]")
    # every document ends with [SEP] at the position just before the next document's start
    ends = [stream.document_start(i) - 1 for i in range(1, stream.n_documents)] + [stream.n_tokens - 1]
    assert (stream.slice(0, stream.n_tokens)[ends] == sep).all()
    blocks = synthetic_data.blocks("train")
    assert sum(blocks[i].n_real for i in range(len(blocks))) == stream.n_tokens


def test_empty_stream_is_refused():
    with pytest.raises(ValueError, match="empty"):
        PackedBlocks(TokenStream.single_document(np.array([], dtype=np.uint16)), 8, pad_id=0)


def test_sampler_order_is_a_function_of_seed_and_epoch():
    a, b = EpochSampler(100, seed=1, shuffle=True), EpochSampler(100, seed=1, shuffle=True)
    assert list(a) == list(b)
    first = [i for _, i, _ in a]
    assert sorted(first) == list(range(100))
    a.set_epoch(1)
    assert all(e == 1 for e, _, _ in a)
    assert [i for _, i, _ in a] != first


@pytest.mark.parametrize("shuffle", [True, False])
def test_each_rank_owns_an_equal_contiguous_part(shuffle):
    ranks = [EpochSampler(11, seed=0, shuffle=shuffle, rank=r, world_size=3) for r in range(3)]
    parts = [[i for _, i, _ in s] for s in ranks]
    within = np.random.default_rng([0, 0]).permutation(3) if shuffle else np.arange(3)
    assert parts == [list(within + 3 * r) for r in range(3)]  # 3 each: 9 and 10 left out
    assert [len(s) for s in ranks] == [3, 3, 3]
    assert [i for _, i, _ in EpochSampler(11, seed=0, shuffle=shuffle)] == (
        list(np.random.default_rng([0, 0]).permutation(11)) if shuffle else list(range(11))
    ), "one process: the order of every earlier lmlab version"


def test_validation_order_is_fixed_and_uses_epoch_zero():
    s = EpochSampler(5, seed=0, shuffle=False)
    s.set_epoch(4)
    assert list(s) == [(0, i, i) for i in range(5)]  # batch_size 1: every example is its own batch


def test_sampler_numbers_batches_within_an_epoch():
    s = EpochSampler(10, seed=0, shuffle=True, batch_size=4)
    assert [b for _, _, b in s] == [0, 0, 0, 0, 1, 1, 1, 1, 2, 2]


def test_dataset_and_collate_add_padding_mask_only_when_needed():
    stream = np.arange(10, 80, dtype=np.uint16)  # 70 tokens -> blocks of 32, 32, 6

    def identity(block, rng):
        return {"input_ids": block.ids, "labels": block.ids}

    ds = BlockDataset(PackedBlocks(TokenStream.single_document(stream), 32, pad_id=0), identity, seed=0)
    full = collate([ds[(0, 0, 0)], ds[(0, 1, 0)]])
    assert "padding_mask" not in full
    assert int(full["n_tokens"]) == 64
    padded = collate([ds[(0, 0, 0)], ds[(0, 2, 0)]])
    assert padded["padding_mask"].dtype == torch.bool
    assert padded["padding_mask"][1].sum() == 6
    assert int(padded["n_tokens"]) == 38


def test_blocks_know_their_sentences_and_documents(synthetic_data, tokenizer):
    stream = synthetic_data.blocks("train").stream
    tokens = stream.slice(0, stream.n_tokens)
    documents = np.asarray([stream.document_start(i) for i in range(stream.n_documents)])
    sentences = stream.sentences_between(0, stream.n_tokens)
    assert set(documents) <= set(sentences)  # every document starts a sentence
    assert len(sentences) > 3 * stream.n_documents
    # the token before a sentence start (inside a document) ends a sentence
    inner = np.setdiff1d(sentences, documents)
    last_tokens = {tokenizer.tokenizer.id_to_token(int(t)) for t in tokens[inner - 1]}
    assert last_tokens <= {".", "!", "?", '"', "'", ")"}
    block = synthetic_data.blocks("train")[5]
    starts = block.sentence_starts()
    assert starts[0] == 0 and (np.diff(starts) > 0).all() and starts[-1] < block.n_real
    assert stream.document_bounds(int(documents[3])) == (int(documents[3]), int(documents[4]))
    assert stream.document_index(int(documents[4]) - 1) == 3


def test_standalone_block_is_one_document_and_sentence():
    block = Block.of(np.arange(5, 12), n_real=5)
    assert block.stream.document_bounds(3) == (0, 5)
    assert block.sentence_starts().tolist() == [0]
