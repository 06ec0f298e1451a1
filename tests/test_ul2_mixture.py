"""UL2's denoiser mixture with mode tokens, and the per-batch objective mixture."""

from __future__ import annotations

from collections import Counter
from dataclasses import replace

import numpy as np
import pytest
from omegaconf import OmegaConf

from lmlab.config_schema import validate_tree
from lmlab.data.blocks import example_rng
from lmlab.data.tokenizer import NLG, NLU, S2S
from lmlab.heads import IGNORE
from lmlab.objectives import build_objective


def test_ul2_draws_each_denoiser_by_weight_and_announces_it(tokenizer, synthetic_data):
    ul2 = build_objective({"name": "ul2"}, tokenizer)
    blocks = synthetic_data.blocks("train")
    modes = Counter()
    names = {tokenizer.token_id(t): t for t in (NLU, NLG, S2S)}
    for i in range(1000):
        block = blocks[i % len(blocks)]
        out = ul2.transform(block, example_rng(0, 0, i))
        assert out["input_ids"].shape == (66,) and out["labels"].shape == (65,)
        mode = names[int(out["input_ids"][0])]
        modes[mode] += 1
        source = out["input_ids"][1 : int(out["n_real"]) - 1]
        target = out["labels"][out["labels"] != IGNORE][:-1]
        if mode == S2S:  # prefix -> continuation: together they are the block
            assert np.array_equal(np.concatenate([source, target]), block.ids[: block.n_real])
        else:
            assert np.isin(source, ul2.sentinels).any() and target[0] in ul2.sentinels
    assert modes[NLU] / 1000 == pytest.approx(0.4, abs=0.05)
    assert modes[NLG] / 1000 == pytest.approx(0.4, abs=0.05)
    assert modes[S2S] / 1000 == pytest.approx(0.2, abs=0.04)


def test_ul2_rejects_an_unknown_mode(tokenizer):
    with pytest.raises(ValueError, match="mode='Q'"):
        build_objective({"name": "ul2", "denoisers": [{"mode": "Q", "weight": 1.0}]}, tokenizer)


def test_mixture_draws_one_component_per_batch(tokenizer, synthetic_data):
    mixture = build_objective({"name": "mixture"}, tokenizer)
    blocks = synthetic_data.blocks("train")
    chosen = []
    for batch in range(200):
        components = {
            int(mixture.transform(replace(blocks[i], batch_key=(0, 0, batch)), example_rng(0, 0, i))["component"])
            for i in range(4)
        }
        assert len(components) == 1, "examples of one batch came from different objectives"
        chosen += components
    assert np.mean(chosen) == pytest.approx(0.5, abs=0.1)


def test_mixture_components_must_share_a_layout(compose_config):
    conf = OmegaConf.to_object(
        compose_config("objective=mixture", "model.layout=encoder", "objective.components=[{name: mlm}, {name: clm}]")
    )
    with pytest.raises(ValueError, match="share one backbone layout"):
        validate_tree(conf)
    ok = OmegaConf.to_object(
        compose_config(
            "objective=mixture",
            "model.layout=encoder",
            "objective.components=[{name: mlm}, {name: electra, weight: 2}]",
        )
    )
    validate_tree(ok)
