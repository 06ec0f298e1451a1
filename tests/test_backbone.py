"""Backbone shapes, padding behaviour, knobs and sizes."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from lmlab.models import Backbone, ModelConfig
from lmlab.models.positions import RotaryPositions, apply_rotary

SMALL = ModelConfig(
    n_layers=2,
    d_model=32,
    n_heads=4,
    d_ff=64,
    max_positions=64,
    vocab_size=100,
    dropout=0.0,
    attention_dropout=0.0,
)


@pytest.mark.parametrize("norm_position", ["pre", "post"])
@pytest.mark.parametrize("positions", ["learned", "sinusoidal", "rotary"])
@pytest.mark.parametrize("norm", ["layernorm", "rmsnorm"])
@pytest.mark.parametrize("feed_forward, activation", [("mlp", "gelu"), ("glu", "silu"), ("glu", "gelu")])
def test_shapes_for_each_knob(norm_position, positions, norm, feed_forward, activation):
    cfg = replace(
        SMALL,
        norm_position=norm_position,
        positions=positions,
        norm=norm,
        feed_forward=feed_forward,
        activation=activation,
    )
    model = Backbone(cfg)
    ids = torch.randint(0, 100, (3, 17))
    hidden = model(ids)
    assert hidden.shape == (3, 17, 32)
    assert model.output_projection(hidden).shape == (3, 17, 100)
    assert torch.isfinite(hidden).all()


def test_padding_does_not_change_real_positions():
    torch.manual_seed(0)
    model = Backbone(SMALL).eval()
    ids = torch.randint(5, 100, (1, 10))
    pad_a = torch.cat([ids, torch.zeros(1, 6, dtype=torch.long)], dim=1)
    pad_b = torch.cat([ids, torch.randint(5, 100, (1, 6))], dim=1)  # different content under the padding
    mask = torch.arange(16)[None, :] < 10
    out_a, out_b = model(pad_a, mask), model(pad_b, mask)
    assert torch.allclose(out_a[:, :10], out_b[:, :10], atol=1e-6)
    assert torch.allclose(out_a[:, :10], model(ids), atol=1e-5)
    # without the mask the padding content leaks into real positions
    assert not torch.allclose(model(pad_a)[:, :10], model(pad_b)[:, :10], atol=1e-4)


def test_encoder_is_bidirectional():
    model = Backbone(SMALL).eval()
    ids = torch.randint(5, 100, (1, 12))
    changed = ids.clone()
    changed[0, 11] = (ids[0, 11] + 1) % 100
    assert not torch.allclose(model(ids)[0, 0], model(changed)[0, 0])


def test_tied_embeddings_share_the_matrix():
    tied = Backbone(SMALL)
    assert tied.lm_out is None
    h = torch.randn(2, 32)
    assert torch.allclose(tied.output_projection(h), h @ tied.token_embedding.weight.T)
    untied = Backbone(replace(SMALL, tie_embeddings=False))
    assert untied.lm_out is not None
    assert untied.lm_out.weight.data_ptr() != untied.token_embedding.weight.data_ptr()


def test_rotary_scores_depend_only_on_relative_position():
    rotary = RotaryPositions(64, head_dim=8)
    q, k = torch.randn(1, 1, 1, 8), torch.randn(1, 1, 1, 8)

    def score(m: int, n: int) -> torch.Tensor:
        return (apply_rotary(q, rotary(1, m)) * apply_rotary(k, rotary(1, n))).sum()

    assert torch.allclose(score(3, 1), score(40, 38), atol=1e-5)
    assert not torch.allclose(score(3, 1), score(3, 2), atol=1e-3)
    assert torch.allclose(apply_rotary(q, rotary(1, 0)), q)  # position 0 is not rotated


def test_rotary_model_has_no_additive_positions_and_needs_even_heads():
    model = Backbone(replace(SMALL, positions="rotary"))
    assert model.stack.positions is None and model.stack.rotary is not None
    with pytest.raises(ValueError, match="even head size"):
        Backbone(replace(SMALL, positions="rotary", d_model=36, n_heads=4))


def test_glu_counts_its_third_matrix_in_flops():
    mlp, glu = Backbone(SMALL), Backbone(replace(SMALL, feed_forward="glu"))
    assert glu.flops_per_token(16) - mlp.flops_per_token(16) == 2 * SMALL.n_layers * SMALL.d_model * SMALL.d_ff


def test_too_long_sequence_is_refused():
    with pytest.raises(ValueError, match="max_positions"):
        Backbone(SMALL)(torch.zeros(1, 65, dtype=torch.long))


@pytest.mark.parametrize(
    "change, message",
    [
        ({"n_heads": 5}, "divisible"),
        ({"norm_position": "middle"}, "norm_position"),
        ({"activation": "tanh"}, "activation"),
    ],
)
def test_bad_model_config_is_refused(change, message):
    with pytest.raises(ValueError, match=message):
        Backbone(replace(SMALL, **change))


def test_bert_base_has_bert_base_size():
    cfg = ModelConfig(n_layers=12, d_model=768, n_heads=12, d_ff=3072, vocab_size=30522)
    n = sum(p.numel() for p in Backbone(cfg).parameters())
    assert 105e6 < n < 115e6


def test_flops_per_token_counts_block_matmuls():
    model = Backbone(SMALL)
    block_params = sum(
        p.numel() for b in model.stack.blocks for n, p in b.named_parameters() if n.endswith("weight") and p.ndim == 2
    )
    assert model.flops_per_token(16) == 2 * block_params + 2 * 4 * 16 * 32
