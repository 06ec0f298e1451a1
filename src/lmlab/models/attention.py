"""Multi-head self- and cross-attention through `scaled_dot_product_attention` (flash kernels on GPU), and
the per-layer cache that incremental decoding keeps."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from lmlab.models.positions import apply_rotary


@dataclass
class LayerCache:
    """What one layer has seen so far: self-attention keys/values (B, H, T, Dh), cross-attention keys/values
    of the encoder output (computed once), or a causal convolution's last inputs (B, D, kernel - 1)."""

    k: torch.Tensor | None = None
    v: torch.Tensor | None = None
    cross_k: torch.Tensor | None = None
    cross_v: torch.Tensor | None = None
    conv: torch.Tensor | None = None

    def reorder(self, index: torch.Tensor) -> None:
        for name in ("k", "v", "cross_k", "cross_v", "conv"):
            value = getattr(self, name)
            if value is not None:
                setattr(self, name, value[index])


class KVCache:
    """Per-layer state of the tokens decoded so far; pass the same object to every decoding step."""

    def __init__(self, n_layers: int) -> None:
        self.layers = [LayerCache() for _ in range(n_layers)]
        self.length = 0  # positions already decoded

    def reorder(self, index: torch.Tensor) -> None:
        """Keep the batch rows `index` (in that order), e.g. the surviving hypotheses of a beam search."""
        for layer in self.layers:
            layer.reorder(index)


@dataclass
class MixContext:
    """How positions of one stack call may mix, shared by all its layers.

    attn_mask: bool (True = allowed) or float (added to scores), broadcastable to (B, H, S, T), or None;
    is_causal: let SDPA apply the causal mask itself (no mask, no cache); padding_mask: (B, S) True at real
    tokens; causal: whether position t may only see positions <= t (for the convolution mixer).
    """

    attn_mask: torch.Tensor | None = None
    is_causal: bool = False
    padding_mask: torch.Tensor | None = None
    causal: bool = False
    rotary: tuple[torch.Tensor, torch.Tensor] | None = None


def _heads(x: torch.Tensor, n_heads: int) -> torch.Tensor:
    """(B, S, D) -> (B, H, S, D/H)."""
    b, s, d = x.shape
    return x.view(b, s, n_heads, d // n_heads).transpose(1, 2)


def _merge(y: torch.Tensor) -> torch.Tensor:
    """(B, H, S, Dh) -> (B, S, H*Dh)."""
    b, h, s, dh = y.shape
    return y.transpose(1, 2).reshape(b, s, h * dh)


class SelfAttention(nn.Module):
    def __init__(self, d_model: int, n_heads: int, dropout: float, bias: bool = True) -> None:
        super().__init__()
        self.n_heads = n_heads
        self.qkv = nn.Linear(d_model, 3 * d_model, bias=bias)
        self.out = nn.Linear(d_model, d_model, bias=bias)
        self.dropout = dropout

    def forward(self, x: torch.Tensor, ctx: MixContext, cache: LayerCache | None = None) -> torch.Tensor:
        """x: (B, S, D). With `cache`, keys and values of earlier calls are prepended (and this call's appended),
        so x holds only the new positions and `ctx.attn_mask` covers all keys."""
        q, k, v = (_heads(t, self.n_heads) for t in self.qkv(x).chunk(3, dim=-1))
        if ctx.rotary is not None:
            q, k = apply_rotary(q, ctx.rotary), apply_rotary(k, ctx.rotary)
        if cache is not None:
            if cache.k is not None and cache.v is not None:
                k, v = torch.cat([cache.k, k], dim=2), torch.cat([cache.v, v], dim=2)
            cache.k, cache.v = k, v
        mask = ctx.attn_mask
        if mask is not None and mask.dtype != torch.bool:
            mask = mask.to(q.dtype)  # a float bias must match the query's dtype under autocast
        y = F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, dropout_p=self.dropout if self.training else 0.0, is_causal=ctx.is_causal
        )
        return self.out(_merge(y))


class CrossAttention(nn.Module):
    """Queries from the decoder, keys and values from the encoder output (`memory`)."""

    def __init__(self, d_model: int, n_heads: int, dropout: float, bias: bool = True) -> None:
        super().__init__()
        self.n_heads = n_heads
        self.q = nn.Linear(d_model, d_model, bias=bias)
        self.kv = nn.Linear(d_model, 2 * d_model, bias=bias)
        self.out = nn.Linear(d_model, d_model, bias=bias)
        self.dropout = dropout

    def forward(
        self,
        x: torch.Tensor,
        memory: torch.Tensor,
        memory_mask: torch.Tensor | None,
        cache: LayerCache | None = None,
    ) -> torch.Tensor:
        """memory_mask: (B, T) bool, True at real encoder positions. The memory's keys and values are
        projected once per cache."""
        if cache is not None and cache.cross_k is not None and cache.cross_v is not None:
            k, v = cache.cross_k, cache.cross_v
        else:
            k, v = (_heads(t, self.n_heads) for t in self.kv(memory).chunk(2, dim=-1))
            if cache is not None:
                cache.cross_k, cache.cross_v = k, v
        mask = None if memory_mask is None else memory_mask[:, None, None, :]
        y = F.scaled_dot_product_attention(
            _heads(self.q(x), self.n_heads), k, v, attn_mask=mask, dropout_p=self.dropout if self.training else 0.0
        )
        return self.out(_merge(y))
