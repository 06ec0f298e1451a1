"""NSP and SOP: label balance, segment layout, and that positive pairs really are consecutive text."""

from __future__ import annotations

import numpy as np
import pytest

from lmlab.data.blocks import example_rng
from lmlab.heads import IGNORE
from lmlab.objectives import build_objective


def _segments(out: dict, cls_id: int) -> tuple[np.ndarray, np.ndarray]:
    """A and B with masked positions restored from the labels."""
    ids = np.where(out["labels"] != IGNORE, out["labels"], out["input_ids"])[: int(out["n_real"])]
    seg = out["segment_ids"][: int(out["n_real"])]
    assert ids[0] == cls_id
    return ids[1 : (seg == 0).sum() - 1], ids[(seg == 0).sum() : -1]


def _contiguous_in(stream: np.ndarray, piece: np.ndarray) -> bool:
    # tokens are < 2**16: compare as uint16 bytes at even offsets
    haystack, needle = stream.astype(np.uint16).tobytes(), piece.astype(np.uint16).tobytes()
    at = haystack.find(needle)
    while at != -1 and at % 2:
        at = haystack.find(needle, at + 1)
    return at != -1


@pytest.mark.parametrize("name", ["nsp", "sop"])
def test_pairs_are_balanced_and_positives_are_consecutive(name, tokenizer, synthetic_data):
    objective = build_objective({"name": name}, tokenizer)
    blocks = synthetic_data.blocks("train")
    stream = blocks.stream.slice(0, blocks.stream.n_tokens)
    labels = []
    for i in range(300):
        out = objective.transform(blocks[i % len(blocks)], example_rng(0, 0, i))
        assert out["input_ids"].shape == (64,) and out["segment_ids"].shape == (64,)
        a, b = _segments(out, objective.cls_id)
        assert len(a) > 0 and len(b) > 0
        assert objective.sep_id not in a and objective.sep_id not in b, "a segment crosses a document end"
        joined = np.concatenate([a, b])
        positive = bool(out["pair_label"])
        labels.append(positive)
        if positive:
            assert _contiguous_in(stream, joined), "a positive pair is not consecutive text"
        elif name == "sop":
            assert _contiguous_in(stream, np.concatenate([b, a])), "a swapped pair must be consecutive when unswapped"
    assert np.mean(labels) == pytest.approx(0.5, abs=0.07)


@pytest.mark.parametrize("name", ["nsp", "sop"])
def test_segment_positions_follow_the_pair_label(name, tokenizer, synthetic_data):
    objective = build_objective({"name": name}, tokenizer)
    blocks = synthetic_data.blocks("train")
    stream = blocks.stream
    starts = set(stream.sentences_between(0, stream.n_tokens).tolist())
    for i in range(200):
        block = blocks[i % len(blocks)]
        pair, positive = objective.segments(block, 61, example_rng(1, 0, i))
        (a0, a1), (b0, b1) = pair.a, pair.b
        a_doc, b_doc = stream.document_bounds(a0), stream.document_bounds(b0)
        assert a1 <= a_doc[1] - 1 and b1 <= b_doc[1] - 1, "a segment includes the document's [SEP]"
        if positive:
            assert a1 == b0 and a_doc == b_doc
        elif name == "sop":
            assert b1 == a0 and a_doc == b_doc  # the same two segments, swapped
        else:
            assert a_doc != b_doc  # NSP negatives come from another document
        assert a1 > a0 and b1 > b0
        assert min(a0, b0) in starts, "the pair does not start at a sentence start"


def test_pair_objectives_need_segment_embeddings(tokenizer, compose_config):
    from omegaconf import OmegaConf

    from lmlab.config_schema import validate_tree
    from lmlab.models import ModelConfig

    conf = OmegaConf.to_object(compose_config("objective=nsp"))
    validate_tree(conf)
    assert conf.model.segments == 2
    with pytest.raises(ValueError, match="model.segments=2"):
        build_objective({"name": "nsp"}, tokenizer).build_head(ModelConfig(segments=0, vocab_size=10))
