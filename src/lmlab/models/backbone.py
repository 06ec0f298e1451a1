"""The Transformer backbone shared by every objective: embeddings, blocks, and the output projection."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from lmlab.models.blocks import TransformerBlock
from lmlab.models.config import ModelConfig
from lmlab.models.positions import make_positions


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
        self.token_embedding = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.positions = make_positions(cfg.positions, cfg.max_positions, cfg.d_model)
        self.embedding_norm = nn.LayerNorm(cfg.d_model, eps=cfg.norm_eps) if cfg.norm_position == "post" else None
        self.drop = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList(TransformerBlock(cfg) for _ in range(cfg.n_layers))
        self.final_norm = nn.LayerNorm(cfg.d_model, eps=cfg.norm_eps) if cfg.norm_position == "pre" else None
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

    def forward(self, input_ids: torch.Tensor, padding_mask: torch.Tensor | None = None) -> torch.Tensor:
        """input_ids: (B, S) long. padding_mask: (B, S) bool, True at real tokens; None means no padding.

        Returns hidden states (B, S, D). Padded positions attend to real tokens only and are never
        attended to, so real positions are unaffected by padding.
        """
        seq_len = input_ids.shape[1]
        if seq_len > self.cfg.max_positions:
            raise ValueError(f"sequence length {seq_len} exceeds model.max_positions={self.cfg.max_positions}")
        x = self.token_embedding(input_ids) + self.positions(seq_len)
        if self.embedding_norm is not None:
            x = self.embedding_norm(x)
        x = self.drop(x)
        attn_mask = None if padding_mask is None else padding_mask[:, None, None, :]
        for block in self.blocks:
            x = block(x, attn_mask)
        return x if self.final_norm is None else self.final_norm(x)

    def output_projection(self, hidden: torch.Tensor) -> torch.Tensor:
        """Hidden states (..., D) -> vocabulary logits (..., V)."""
        if self.lm_out is None:
            return F.linear(hidden, self.token_embedding.weight)
        return self.lm_out(hidden)

    def flops_per_token(self, seq_len: int) -> int:
        """Forward FLOPs per token of the blocks (matmuls only): 2 * block params + attention scores/values."""
        d, n = self.cfg.d_model, self.cfg.n_layers
        block_matmul_params = n * (4 * d * d + 2 * d * self.cfg.d_ff)
        return 2 * block_matmul_params + n * 4 * seq_len * d
