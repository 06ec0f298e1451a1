"""Layout-agnostic building blocks: feed-forward, norms and the residual Transformer block."""

from __future__ import annotations

import torch
from torch import nn

from lmlab.models.attention import LayerCache, SelfAttention
from lmlab.models.config import ModelConfig

_ACTIVATIONS = {
    "gelu": nn.GELU,
    "gelu_tanh": lambda: nn.GELU(approximate="tanh"),
    "relu": nn.ReLU,
    "silu": nn.SiLU,
}


def make_activation(name: str) -> nn.Module:
    return _ACTIVATIONS[name]()


class GLUFeedForward(nn.Module):
    """Gated feed-forward (Shazeer 2020): GeGLU with gelu, SwiGLU with silu."""

    def __init__(self, d_model: int, d_ff: int, activation: str) -> None:
        super().__init__()
        self.gate = nn.Linear(d_model, d_ff)
        self.up = nn.Linear(d_model, d_ff)
        self.act = make_activation(activation)
        self.down = nn.Linear(d_ff, d_model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down(self.act(self.gate(x)) * self.up(x))


def make_norm(cfg: ModelConfig) -> nn.Module:
    if cfg.norm == "rmsnorm":
        return nn.RMSNorm(cfg.d_model, eps=cfg.norm_eps)
    return nn.LayerNorm(cfg.d_model, eps=cfg.norm_eps)


class FeedForward(nn.Module):
    def __init__(self, d_model: int, d_ff: int, activation: str) -> None:
        super().__init__()
        self.up = nn.Linear(d_model, d_ff)
        self.act = make_activation(activation)
        self.down = nn.Linear(d_ff, d_model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down(self.act(self.up(x)))


class TransformerBlock(nn.Module):
    """Self-attention + feed-forward, each wrapped in a residual with pre- or post-LayerNorm."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.pre_norm = cfg.norm_position == "pre"
        self.attn = SelfAttention(cfg.d_model, cfg.n_heads, cfg.attention_dropout)
        ff = GLUFeedForward if cfg.feed_forward == "glu" else FeedForward
        self.ff = ff(cfg.d_model, cfg.d_ff, cfg.activation)
        self.norm1 = make_norm(cfg)
        self.norm2 = make_norm(cfg)
        self.drop = nn.Dropout(cfg.dropout)

    def forward(
        self,
        x: torch.Tensor,
        attn_mask: torch.Tensor | None = None,
        causal: bool = False,
        cache: LayerCache | None = None,
        rotary: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        if self.pre_norm:
            x = x + self.drop(self.attn(self.norm1(x), attn_mask, causal, cache, rotary))
            return x + self.drop(self.ff(self.norm2(x)))
        x = self.norm1(x + self.drop(self.attn(x, attn_mask, causal, cache, rotary)))
        return self.norm2(x + self.drop(self.ff(x)))
