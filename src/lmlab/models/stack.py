"""A stack of Transformer blocks over embedded inputs: positions, masks, blocks and the final norm.

The backbone uses one stack (encoder, decoder, prefix-LM) or two (encoder-decoder); ELECTRA's generator is one too.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from lmlab.models.attention import KVCache, MixContext
from lmlab.models.blocks import TransformerBlock, make_norm
from lmlab.models.config import ModelConfig
from lmlab.models.positions import RelativePositionBias, RotaryPositions, make_positions


class Stack(nn.Module):
    """`causal`: position t sees positions <= t unless a `visible` mask says otherwise. Relative-bias buckets are
    bidirectional unless the stack is a pure decoder."""

    def __init__(self, cfg: ModelConfig, causal: bool, bidirectional: bool, cross_attention: bool = False) -> None:
        super().__init__()
        self.cfg = cfg
        self.causal = causal
        self.positions = make_positions(cfg.positions, cfg.max_positions, cfg.d_model)
        self.rotary = (
            RotaryPositions(cfg.max_positions, cfg.d_model // cfg.n_heads, cfg.rotary_base)
            if cfg.positions == "rotary"
            else None
        )
        self.relative = (
            RelativePositionBias(cfg.n_heads, cfg.relative_buckets, cfg.relative_max_distance, bidirectional)
            if cfg.positions == "relative"
            else None
        )
        self.embedding_norm = make_norm(cfg) if cfg.norm_position == "post" else None
        self.drop = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList(TransformerBlock(cfg, cross_attention) for _ in range(cfg.n_layers))
        self.final_norm = make_norm(cfg) if cfg.norm_position == "pre" else None
        # Recompute each block's activations in the backward pass instead of keeping them (trainer.fsdp option).
        self.checkpoint_blocks = False

    def forward(
        self,
        x: torch.Tensor,
        padding_mask: torch.Tensor | None = None,
        cache: KVCache | None = None,
        visible: torch.Tensor | None = None,
        memory: torch.Tensor | None = None,
        memory_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """x: (B, S, D) embeddings. padding_mask: (B, S) True at real tokens. visible: (B, 1, S, S) bool that
        replaces causality (prefix-LM). With `cache`, x holds the positions after those already cached."""
        seq_len = x.shape[1]
        offset = 0 if cache is None else cache.length
        if offset + seq_len > self.cfg.max_positions:
            raise ValueError(f"sequence length {offset + seq_len} exceeds model.max_positions={self.cfg.max_positions}")
        if self.positions is not None:
            x = x + self.positions(seq_len, offset)
        if self.embedding_norm is not None:
            x = self.embedding_norm(x)
        x = self.drop(x)
        ctx = self._context(seq_len, offset, padding_mask, visible, x.device)
        for i, block in enumerate(self.blocks):
            layer_cache = None if cache is None else cache.layers[i]
            if self.checkpoint_blocks and torch.is_grad_enabled():
                x = checkpoint(block, x, ctx, layer_cache, memory, memory_mask, use_reentrant=False)
            else:
                x = block(x, ctx, layer_cache, memory, memory_mask)
        if cache is not None:
            cache.length += seq_len
        return x if self.final_norm is None else self.final_norm(x)

    def _context(
        self,
        seq_len: int,
        offset: int,
        padding_mask: torch.Tensor | None,
        visible: torch.Tensor | None,
        device: torch.device,
    ) -> MixContext:
        causal = self.causal and visible is None
        allowed = None if padding_mask is None else padding_mask[:, None, None, :]
        if visible is not None:
            allowed = visible if allowed is None else allowed & visible
        bias = None if self.relative is None else self.relative(seq_len, offset + seq_len, offset)
        is_causal = causal and allowed is None and bias is None and offset == 0
        if causal and not is_causal:
            # Query i sits at absolute position offset + i and may see keys 0 .. offset + i.
            tri = torch.ones(seq_len, offset + seq_len, dtype=torch.bool, device=device).tril(diagonal=offset)
            allowed = tri if allowed is None else allowed & tri
        mask = allowed
        if bias is not None:
            mask = bias if allowed is None else bias.masked_fill(~allowed, float("-inf"))
        rotary = None if self.rotary is None else self.rotary(seq_len, offset)
        return MixContext(mask, is_causal, padding_mask, self.causal, rotary)

    def flops_per_token(self, seq_len: int, memory_len: int = 0) -> int:
        return flops_per_token(self.cfg, seq_len, memory_len, cross_attention=self.blocks[0].cross is not None)


def flops_per_token(cfg: ModelConfig, seq_len: int, memory_len: int = 0, cross_attention: bool = False) -> int:
    """Forward matmul FLOPs per token of a stack: projections, feed-forward, attention scores and values
    (or the convolution), and cross-attention over `memory_len` encoder positions."""
    d = cfg.d_model
    ff = (3 if cfg.feed_forward == "glu" else 2) * d * cfg.d_ff
    mixer = 2 * (3 * d * d + d * cfg.kernel_size) if cfg.mixer == "conv" else 2 * 4 * d * d + 4 * seq_len * d
    cross = 2 * 4 * d * d + 4 * memory_len * d if cross_attention else 0
    return cfg.n_layers * (mixer + cross + 2 * ff)
