"""Prefix LM: the split transform, the prefix mask checked by gradients, and learning."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from lmlab.data.blocks import Block, example_rng
from lmlab.heads import IGNORE
from lmlab.models import Backbone
from lmlab.objectives import build_objective

from .test_backbone import SMALL
from .test_clm import _input_gradients

PREFIX_LM = replace(SMALL, layout="prefix_lm")


def test_split_predicts_exactly_the_tokens_after_the_prefix(tokenizer):
    objective = build_objective({"name": "prefix_lm"}, tokenizer)
    pad = tokenizer.token_id("[PAD]")
    ids = np.concatenate([np.arange(10, 30), [pad] * 4])
    lengths = set()
    for i in range(200):
        out = objective.transform(Block.of(ids, n_real=20), example_rng(0, 0, i))
        p = int(out["prefix_length"])
        lengths.add(p)
        assert 1 <= p <= 19
        targets = out["labels"][out["labels"] != IGNORE]
        assert np.array_equal(targets, ids[p:20])  # every token after the prefix, once, no padding
        assert out["labels"][p - 1] == ids[p]
    assert len(lengths) > 10


def test_prefix_is_bidirectional_and_the_rest_causal():
    model = Backbone(PREFIX_LM)
    ids = torch.randint(5, 100, (1, 12))

    def grads(t: int, prefix: int) -> torch.Tensor:
        return _input_gradients(model, ids, t, prefix_lengths=torch.tensor([prefix]))

    inside = grads(2, prefix=5)  # position 2 sees the whole prefix 0..4, nothing after it
    assert (inside[:5] > 0).all() and (inside[5:] == 0).all()
    after = grads(8, prefix=5)  # position 8 sees 0..8
    assert (after[:9] > 0).all() and (after[9:] == 0).all()


def test_prefix_lengths_are_refused_by_other_layouts():
    with pytest.raises(ValueError, match="model.layout=prefix_lm"):
        Backbone(SMALL)(torch.zeros(1, 4, dtype=torch.long), prefix_lengths=torch.tensor([2]))


def test_examples_show_inputs_targets_and_extra_fields(synthetic_data, tokenizer):
    from lmlab.pretraining.examples import describe_examples

    text = describe_examples(
        build_objective({"name": "prefix_lm"}, tokenizer), synthetic_data.blocks("train"), tokenizer, seed=0, n=2
    )
    assert text.count("== example") == 2 and text.count("prefix_length: ") == 2
    first_target = text.split("targets: ")[1].split()[0]
    prefix = int(text.split("prefix_length: ")[1].split()[0])
    assert first_target.startswith(f"{prefix - 1}:")  # the prefix's last position predicts the first target
