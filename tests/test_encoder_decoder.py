"""The encoder-decoder layout: cross-attention, causality of the decoder, and cached decoding."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from lmlab.models import Backbone
from lmlab.models.positions import RelativePositionBias

from .test_backbone import SMALL

ENC_DEC = replace(SMALL, layout="encoder_decoder")


def test_decoder_sees_the_whole_source_and_only_earlier_targets():
    model = Backbone(ENC_DEC).eval()
    src, tgt = torch.randint(5, 100, (1, 9)), torch.randint(5, 100, (1, 7))
    src_emb = model.embed(src).detach().requires_grad_(True)
    tgt_emb = model.embed(tgt).detach().requires_grad_(True)
    memory = model.stack(src_emb)
    hidden = model.decoder(tgt_emb, memory=memory)[:, 3]
    (hidden * torch.randn_like(hidden)).sum().backward()
    assert (src_emb.grad.abs().sum(-1) > 0).all()
    tgt_grad = tgt_emb.grad.abs().sum(-1)[0]
    assert (tgt_grad[:4] > 0).all() and (tgt_grad[4:] == 0).all()


def test_source_padding_is_invisible_to_the_decoder():
    model = Backbone(ENC_DEC).eval()
    src = torch.randint(5, 100, (1, 6))
    tgt = torch.randint(5, 100, (1, 5))
    padded = torch.cat([src, torch.randint(5, 100, (1, 4))], dim=1)
    mask = torch.arange(10)[None] < 6
    with torch.no_grad():
        plain = model.decode(tgt, model(src))
        masked = model.decode(tgt, model(padded, mask), mask)
    assert torch.allclose(plain, masked, atol=1e-5)


@pytest.mark.parametrize("positions", ["learned", "relative", "rotary"])
def test_cached_decoding_matches_a_full_decoder_pass(positions):
    model = Backbone(replace(ENC_DEC, positions=positions)).eval()
    src, tgt = torch.randint(5, 100, (2, 9)), torch.randint(5, 100, (2, 9))
    with torch.no_grad():
        memory = model(src)
        full = model.decode(tgt, memory)
        cache = model.new_cache()
        steps = [model.decode(tgt[:, i : i + 1], memory, cache=cache) for i in range(8)]
        assert cache.length == 8
        # beam search reorders hypotheses: the cache (self and cross keys) follows the rows
        cache.reorder(torch.tensor([1, 0]))
        swapped = model.decode(tgt[[1, 0], 8:], memory[[1, 0]], cache=cache)
    assert torch.allclose(torch.cat(steps, dim=1), full[:, :8], atol=1e-5)
    assert torch.allclose(swapped, full[[1, 0], 8:], atol=1e-5)


def test_decode_is_refused_without_a_decoder():
    with pytest.raises(ValueError, match="encoder_decoder"):
        Backbone(SMALL).decode(torch.zeros(1, 2, dtype=torch.long), torch.zeros(1, 2, SMALL.d_model))


def test_relative_buckets_are_exact_near_and_logarithmic_far():
    bias = RelativePositionBias(n_heads=2, num_buckets=32, max_distance=128, bidirectional=True)
    offsets = torch.arange(-200, 201)
    buckets = bias.bucket(offsets)
    assert buckets.min() >= 0 and buckets.max() < 32
    # keys before and after the query never share a bucket; small offsets each get their own
    assert set(buckets[offsets < 0].tolist()).isdisjoint(buckets[offsets > 0].tolist())
    assert len(set(bias.bucket(torch.arange(-7, 8)).tolist())) == 15
    assert (buckets[offsets <= -128] == buckets[0]).all()  # beyond max_distance all share the last bucket
    causal = RelativePositionBias(2, 32, 128, bidirectional=False)
    assert (causal.bucket(torch.arange(1, 50)) == 0).all()  # future keys are masked anyway


def test_conv_mixer_refuses_attention_only_positions_and_prefix_lm():
    with pytest.raises(ValueError, match="model.mixer=conv"):
        Backbone(replace(SMALL, mixer="conv", positions="rotary"))
    with pytest.raises(ValueError, match="prefix_lm"):
        Backbone(replace(SMALL, mixer="conv", layout="prefix_lm"))


def test_encoder_decoder_flops_count_both_stacks():
    model = Backbone(ENC_DEC)
    per_layer = model.decoder.flops_per_token(8, memory_len=16) - model.stack.flops_per_token(8)
    d = SMALL.d_model
    assert per_layer == SMALL.n_layers * (2 * 4 * d * d + 4 * 16 * d)
