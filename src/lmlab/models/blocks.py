"""Layout-agnostic building blocks: feed-forward, norms and the residual Transformer block."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from lmlab.models.attention import CrossAttention, LayerCache, MixContext, SelfAttention
from lmlab.models.config import ModelConfig
from lmlab.models.conv import LightweightConv

_ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {
    "gelu": nn.GELU,
    "gelu_tanh": lambda: nn.GELU(approximate="tanh"),
    "relu": nn.ReLU,
    "silu": nn.SiLU,
}


def make_activation(name: str) -> nn.Module:
    return _ACTIVATIONS[name]()


class GLUFeedForward(nn.Module):
    """Gated feed-forward (Shazeer 2020): GeGLU with gelu, SwiGLU with silu."""

    def __init__(self, d_model: int, d_ff: int, activation: str, bias: bool = True) -> None:
        super().__init__()
        self.gate = nn.Linear(d_model, d_ff, bias=bias)
        self.up = nn.Linear(d_model, d_ff, bias=bias)
        self.act = make_activation(activation)
        self.down = nn.Linear(d_ff, d_model, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down(self.act(self.gate(x)) * self.up(x))


def make_norm(cfg: ModelConfig) -> nn.Module:
    if cfg.norm == "rmsnorm":
        return nn.RMSNorm(cfg.d_model, eps=cfg.norm_eps)
    return nn.LayerNorm(cfg.d_model, eps=cfg.norm_eps, bias=cfg.bias)


class FeedForward(nn.Module):
    def __init__(self, d_model: int, d_ff: int, activation: str, bias: bool = True) -> None:
        super().__init__()
        self.up = nn.Linear(d_model, d_ff, bias=bias)
        self.act = make_activation(activation)
        self.down = nn.Linear(d_ff, d_model, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down(self.act(self.up(x)))


class TransformerBlock(nn.Module):
    """Mixer (self-attention or convolution), optional cross-attention, feed-forward; each sublayer wrapped
    in a residual with pre- or post-norm."""

    def __init__(self, cfg: ModelConfig, cross_attention: bool = False) -> None:
        super().__init__()
        self.pre_norm = cfg.norm_position == "pre"
        self.mixer: nn.Module
        if cfg.mixer == "conv":
            self.mixer = LightweightConv(cfg.d_model, cfg.n_heads, cfg.kernel_size, cfg.attention_dropout, cfg.bias)
        else:
            self.mixer = SelfAttention(cfg.d_model, cfg.n_heads, cfg.attention_dropout, cfg.bias)
        self.cross = (
            CrossAttention(cfg.d_model, cfg.n_heads, cfg.attention_dropout, cfg.bias) if cross_attention else None
        )
        ff = GLUFeedForward if cfg.feed_forward == "glu" else FeedForward
        self.ff = ff(cfg.d_model, cfg.d_ff, cfg.activation, cfg.bias)
        self.norms = nn.ModuleList(make_norm(cfg) for _ in range(3 if cross_attention else 2))
        self.drop = nn.Dropout(cfg.dropout)

    def _residual(self, x: torch.Tensor, i: int, sublayer) -> torch.Tensor:
        if self.pre_norm:
            return x + self.drop(sublayer(self.norms[i](x)))
        return self.norms[i](x + self.drop(sublayer(x)))

    def forward(
        self,
        x: torch.Tensor,
        ctx: MixContext,
        cache: LayerCache | None = None,
        memory: torch.Tensor | None = None,
        memory_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        x = self._residual(x, 0, lambda h: self.mixer(h, ctx, cache))
        if self.cross is not None:
            x = self._residual(x, 1, lambda h: self.cross(h, memory, memory_mask, cache))
        return self._residual(x, len(self.norms) - 1, self.ff)
