"""The Transformer backbone shared by every objective: embeddings, blocks, and the output projection."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from lmlab.models.attention import KVCache
from lmlab.models.blocks import TransformerBlock, make_norm
from lmlab.models.config import ModelConfig
from lmlab.models.positions import RotaryPositions, make_positions


class Backbone(nn.Module):
    """Token ids -> contextual hidden states; `output_projection` maps hidden states to vocabulary logits.

    With `tie_embeddings` the output projection reuses the input embedding matrix.
    """

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        cfg.validate()
        if cfg.vocab_size < 1:
            raise ValueError("model.vocab_size must be set (it comes from the tokenizer)")
        self.cfg = cfg
        self.causal = cfg.layout in ("decoder", "prefix_lm")
        self.token_embedding = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.positions = make_positions(cfg.positions, cfg.max_positions, cfg.d_model)
        self.rotary = (
            RotaryPositions(cfg.max_positions, cfg.d_model // cfg.n_heads) if cfg.positions == "rotary" else None
        )
        self.embedding_norm = make_norm(cfg) if cfg.norm_position == "post" else None
        self.drop = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList(TransformerBlock(cfg) for _ in range(cfg.n_layers))
        self.final_norm = make_norm(cfg) if cfg.norm_position == "pre" else None
        self.lm_out = None if cfg.tie_embeddings else nn.Linear(cfg.d_model, cfg.vocab_size, bias=False)
        self.apply(self._init_weights)
        # GPT-2 style: scale the residual output projections by depth so activations stay bounded.
        for block in self.blocks:
            for proj in (block.attn.out, block.ff.down):
                nn.init.normal_(proj.weight, std=cfg.init_std / math.sqrt(2 * cfg.n_layers))

    def _init_weights(self, module: nn.Module) -> None:
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, std=self.cfg.init_std)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)

    def forward(
        self,
        input_ids: torch.Tensor,
        padding_mask: torch.Tensor | None = None,
        cache: KVCache | None = None,
        prefix_lengths: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """input_ids: (B, S) long. padding_mask: (B, S) bool, True at real tokens; None means no padding.
        prefix_lengths: (B,) for the prefix_lm layout: positions before it attend to each other both ways.

        Returns hidden states (B, S, D). Padded positions are never attended to, so real positions are
        unaffected by padding. With `cache` (decoder layout), input_ids are the positions after those
        already in the cache; padding is then not supported.
        """
        seq_len = input_ids.shape[1]
        offset = 0
        if cache is not None:
            if self.cfg.layout != "decoder" or padding_mask is not None:
                raise ValueError("a KV cache needs the decoder layout and unpadded inputs")
            offset = cache.length
        if offset + seq_len > self.cfg.max_positions:
            raise ValueError(f"sequence length {offset + seq_len} exceeds model.max_positions={self.cfg.max_positions}")
        x = self.token_embedding(input_ids)
        if self.positions is not None:
            x = x + self.positions(seq_len, offset)
        rotary = None if self.rotary is None else self.rotary(seq_len, offset)
        if self.embedding_norm is not None:
            x = self.embedding_norm(x)
        x = self.drop(x)
        attn_mask = None if padding_mask is None else padding_mask[:, None, None, :]
        causal = self.causal
        if prefix_lengths is not None:
            if self.cfg.layout != "prefix_lm":
                raise ValueError(f"prefix_lengths need model.layout=prefix_lm; model.layout={self.cfg.layout}")
            visible = _prefix_lm_mask(seq_len, prefix_lengths)
            attn_mask = visible if attn_mask is None else attn_mask & visible
            causal = False
        for i, block in enumerate(self.blocks):
            x = block(x, attn_mask, causal, None if cache is None else cache.layers[i], rotary)
        return x if self.final_norm is None else self.final_norm(x)

    def new_cache(self) -> KVCache:
        return KVCache(self.cfg.n_layers)

    def output_projection(self, hidden: torch.Tensor) -> torch.Tensor:
        """Hidden states (..., D) -> vocabulary logits (..., V)."""
        if self.lm_out is None:
            return F.linear(hidden, self.token_embedding.weight)
        return self.lm_out(hidden)

    def flops_per_token(self, seq_len: int) -> int:
        """Forward FLOPs per token of the blocks (matmuls only): 2 * block params + attention scores/values."""
        d, n = self.cfg.d_model, self.cfg.n_layers
        ff_matrices = 3 if self.cfg.feed_forward == "glu" else 2
        block_matmul_params = n * (4 * d * d + ff_matrices * d * self.cfg.d_ff)
        return 2 * block_matmul_params + n * 4 * seq_len * d


def _prefix_lm_mask(seq_len: int, prefix_lengths: torch.Tensor) -> torch.Tensor:
    """(B, 1, S, S) bool: query i sees key j if j <= i, or if j lies in the example's prefix."""
    pos = torch.arange(seq_len, device=prefix_lengths.device)
    causal = pos[None, :] <= pos[:, None]
    in_prefix = pos[None, None, :] < prefix_lengths[:, None, None]
    return (causal[None] | in_prefix)[:, None]
