"""The Transformer backbone shared by every objective: embeddings, one or two stacks, the output projection."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from lmlab.models.attention import KVCache
from lmlab.models.config import ModelConfig
from lmlab.models.stack import Stack


class Backbone(nn.Module):
    """Token ids -> contextual hidden states; `output_projection` maps hidden states to vocabulary logits.

    `stack` is the encoder, decoder or prefix-LM; the encoder_decoder layout adds `decoder`, which cross-attends
    to the encoder output and shares the token embedding. With `tie_embeddings` the output projection reuses the
    input embedding matrix.
    """

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        cfg.validate()
        if cfg.vocab_size < 1:
            raise ValueError("model.vocab_size must be set (it comes from the tokenizer)")
        self.cfg = cfg
        self.token_embedding = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.segment_embedding = nn.Embedding(cfg.segments, cfg.d_model) if cfg.segments else None
        self.stack = Stack(cfg, causal=cfg.layout in ("decoder", "prefix_lm"), bidirectional=cfg.layout != "decoder")
        self.decoder = (
            Stack(cfg, causal=True, bidirectional=False, cross_attention=True)
            if cfg.layout == "encoder_decoder"
            else None
        )
        self.lm_out = None if cfg.tie_embeddings else nn.Linear(cfg.d_model, cfg.vocab_size, bias=False)
        self.apply(self._init_weights)
        # GPT-2 style: scale the residual output projections by depth so activations stay bounded.
        for module in self.modules():
            if isinstance(module, Stack):
                for block in module.blocks:
                    for sub in (block.mixer, block.cross, block.ff):
                        proj = None if sub is None else getattr(sub, "out", None) or getattr(sub, "down", None)
                        if proj is not None:
                            nn.init.normal_(proj.weight, std=cfg.init_std / math.sqrt(2 * cfg.n_layers))

    def _init_weights(self, module: nn.Module) -> None:
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, std=self.cfg.init_std)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)

    def embed(self, input_ids: torch.Tensor, segment_ids: torch.Tensor | None = None) -> torch.Tensor:
        x = self.token_embedding(input_ids)
        if segment_ids is not None:
            if self.segment_embedding is None:
                raise ValueError("segment ids need model.segments >= 2 (sentence-pair objectives set it)")
            x = x + self.segment_embedding(segment_ids)
        elif self.segment_embedding is not None:
            x = x + self.segment_embedding.weight[0]
        return x

    def forward(
        self,
        input_ids: torch.Tensor,
        padding_mask: torch.Tensor | None = None,
        cache: KVCache | None = None,
        prefix_lengths: torch.Tensor | None = None,
        segment_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """input_ids: (B, S) long. padding_mask: (B, S) bool, True at real tokens; None means no padding.
        prefix_lengths: (B,) for the prefix_lm layout: positions before it attend to each other both ways.
        segment_ids: (B, S) sentence-pair segments (needs model.segments).

        Returns hidden states (B, S, D): the encoder output for the encoder_decoder layout. Padded positions are
        never attended to. With `cache` (decoder layout), input_ids are the positions after those already cached.
        """
        if cache is not None and (self.cfg.layout != "decoder" or padding_mask is not None):
            raise ValueError("a KV cache needs the decoder layout and unpadded inputs (see Backbone.decode)")
        visible = None
        if prefix_lengths is not None:
            if self.cfg.layout != "prefix_lm":
                raise ValueError(f"prefix_lengths need model.layout=prefix_lm; model.layout={self.cfg.layout}")
            visible = _prefix_lm_mask(input_ids.shape[1], prefix_lengths)
        return self.stack(self.embed(input_ids, segment_ids), padding_mask, cache, visible)

    def decode(
        self,
        decoder_input_ids: torch.Tensor,
        memory: torch.Tensor,
        memory_mask: torch.Tensor | None = None,
        cache: KVCache | None = None,
    ) -> torch.Tensor:
        """The encoder_decoder layout's decoder: (B, S) ids -> (B, S, D), attending causally to itself and to
        `memory` (the encoder output, real where `memory_mask`). With `cache`, ids are the new positions only."""
        if self.decoder is None:
            raise ValueError(f"decode needs model.layout=encoder_decoder; model.layout={self.cfg.layout}")
        return self.decoder(self.embed(decoder_input_ids), None, cache, None, memory, memory_mask)

    def new_cache(self) -> KVCache:
        return KVCache(self.cfg.n_layers)

    def output_projection(self, hidden: torch.Tensor) -> torch.Tensor:
        """Hidden states (..., D) -> vocabulary logits (..., V)."""
        if self.lm_out is None:
            return F.linear(hidden, self.token_embedding.weight)
        return self.lm_out(hidden)

    def flops_per_token(self, seq_len: int) -> int:
        """Forward FLOPs per token of the (first) stack's matmuls; see `Stack.flops_per_token`."""
        return self.stack.flops_per_token(seq_len)


def _prefix_lm_mask(seq_len: int, prefix_lengths: torch.Tensor) -> torch.Tensor:
    """(B, 1, S, S) bool: query i sees key j if j <= i, or if j lies in the example's prefix."""
    pos = torch.arange(seq_len, device=prefix_lengths.device)
    causal = pos[None, :] <= pos[:, None]
    in_prefix = pos[None, None, :] < prefix_lengths[:, None, None]
    return (causal[None] | in_prefix)[:, None]
