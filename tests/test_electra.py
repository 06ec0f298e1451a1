"""ELECTRA: replaced-token labels, reproducible generator sampling, the shared embedding, and the loss parts."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import torch

from lmlab.data.blocks import Block, example_rng
from lmlab.data.blocks import collate as collate_examples
from lmlab.models import Backbone
from lmlab.objectives import build_objective
from lmlab.objectives.electra import generator_config, replaced_labels, sample_from_logits

from .test_backbone import SMALL


def test_labels_are_zero_where_the_generator_sampled_the_original():
    original = torch.tensor([[5, 6, 7, 8]])
    corrupted = torch.tensor([[5, 9, 7, 8]])  # position 2 was masked but the generator drew 7 back
    assert replaced_labels(corrupted, original).tolist() == [[0.0, 1.0, 0.0, 0.0]]


def test_inverse_cdf_sampling_follows_the_distribution_and_the_uniforms():
    logits = torch.log(torch.tensor([[0.1, 0.6, 0.3]])).expand(20000, 3)
    uniform = torch.from_numpy(np.random.default_rng(0).random(20000))
    draws = sample_from_logits(logits, uniform)
    freq = torch.bincount(draws, minlength=3).float() / len(draws)
    assert torch.allclose(freq, torch.tensor([0.1, 0.6, 0.3]), atol=0.01)
    assert torch.equal(draws, sample_from_logits(logits, uniform))  # same uniforms, same tokens
    certain = torch.tensor([[0.0, 50.0, 0.0]])
    assert sample_from_logits(certain, torch.tensor([0.999])).item() == 1


def test_forward_reports_generator_and_discriminator_and_shares_the_embedding(tokenizer, synthetic_data):
    electra = build_objective({"name": "electra"}, tokenizer)
    cfg = replace(SMALL, vocab_size=tokenizer.vocab_size, max_positions=64)
    backbone = Backbone(cfg)
    head = electra.build_head(cfg)
    blocks = synthetic_data.blocks("train")
    batch = collate_examples(
        [
            {**electra.transform(blocks[i], example_rng(0, 0, i)), "n_real": np.asarray(64), "n_tokens": np.asarray(64)}
            for i in range(4)
        ]
    )
    out = electra.forward(backbone, head, batch)
    assert set(out.parts) == {
        "generator_loss",
        "discriminator_loss",
        "replaced_frac",
        "discriminator_auc",
        "replaced_recall",
        "generator_acc",
    }
    assert all(0.0 <= float(out.parts[k]) <= 1.0 for k in ("discriminator_auc", "replaced_recall", "generator_acc"))
    assert 0 < float(out.parts["replaced_frac"]) <= 0.2
    assert int(out.n_targets) == 4 * 64
    torch.testing.assert_close(out.loss, out.parts["generator_loss"] + 50.0 * out.parts["discriminator_loss"])
    out.loss.backward()
    assert backbone.token_embedding.weight.grad is not None  # used by both generator and discriminator
    assert not any(p is backbone.token_embedding.weight for p in head.parameters())
    assert electra.flops_per_batch(backbone, batch) > 0


def test_generator_is_a_fraction_of_the_discriminator():
    gen = generator_config(replace(SMALL, d_model=256, n_heads=4, d_ff=1024), 0.25)
    assert (gen.d_model, gen.n_heads, gen.d_ff, gen.layout) == (64, 1, 256, "encoder")


def test_transform_masks_with_mask_token_and_draws_uniforms(tokenizer):
    electra = build_objective({"name": "electra"}, tokenizer)
    out = electra.transform(Block.of(np.arange(200, 264)), example_rng(0, 0, 0))
    selected = out["labels"] != -100
    assert selected.any() and (out["input_ids"][selected] == electra.masker.mask_id).all()
    assert out["uniform"].dtype == np.float32 and ((out["uniform"] >= 0) & (out["uniform"] < 1)).all()


def test_binary_auc_is_the_chance_a_positive_outscores_a_negative():
    from lmlab.objectives.electra import binary_auc

    target = torch.tensor([0.0, 0.0, 1.0, 1.0])
    assert float(binary_auc(torch.tensor([0.1, 0.2, 0.3, 0.4]), target)) == 1.0
    assert float(binary_auc(torch.tensor([0.4, 0.3, 0.2, 0.1]), target)) == 0.0
    assert float(binary_auc(torch.tensor([0.1, 0.3, 0.2, 0.4]), target)) == 0.75  # 3 of 4 pairs ordered
    assert float(binary_auc(torch.tensor([0.1, 0.2]), torch.tensor([0.0, 0.0]))) == 0.5
