"""Multi-head self-attention through `scaled_dot_product_attention` (flash kernels on GPU), with an optional
key/value cache for incremental decoding."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from lmlab.models.positions import apply_rotary


@dataclass
class LayerCache:
    """Keys and values (B, H, T, Dh) one attention layer has seen so far."""

    k: torch.Tensor | None = None
    v: torch.Tensor | None = None


class KVCache:
    """Per-layer keys and values of the tokens decoded so far; pass the same object to every decoding step."""

    def __init__(self, n_layers: int) -> None:
        self.layers = [LayerCache() for _ in range(n_layers)]

    def reorder(self, index: torch.Tensor) -> None:
        """Keep the batch rows `index` (in that order), e.g. the surviving hypotheses of a beam search."""
        for layer in self.layers:
            if layer.k is not None:
                layer.k, layer.v = layer.k[index], layer.v[index]

    @property
    def length(self) -> int:
        first = self.layers[0].k
        return 0 if first is None else first.shape[2]


class SelfAttention(nn.Module):
    def __init__(self, d_model: int, n_heads: int, dropout: float) -> None:
        super().__init__()
        self.n_heads = n_heads
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.out = nn.Linear(d_model, d_model)
        self.dropout = dropout

    def forward(
        self,
        x: torch.Tensor,
        attn_mask: torch.Tensor | None = None,
        causal: bool = False,
        cache: LayerCache | None = None,
        rotary: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """x: (B, S, D). attn_mask: bool, broadcastable to (B, H, S, T), True where attention is allowed.
        `rotary`: (cos, sin) of the new positions, applied to queries and keys.

        `causal` lets position t attend to keys up to t only. With `cache`, keys and values of earlier
        calls are prepended (and this call's are appended to it), so x holds only the new positions.
        """
        b, s, d = x.shape
        q, k, v = self.qkv(x).view(b, s, 3, self.n_heads, d // self.n_heads).permute(2, 0, 3, 1, 4)
        if rotary is not None:
            q, k = apply_rotary(q, rotary), apply_rotary(k, rotary)
        past = 0
        if cache is not None:
            if cache.k is not None:
                past = cache.k.shape[2]
                k, v = torch.cat([cache.k, k], dim=2), torch.cat([cache.v, v], dim=2)
            cache.k, cache.v = k, v
        is_causal = causal and attn_mask is None and past == 0
        if causal and not is_causal:
            # Query i sits at absolute position past + i and may see keys 0 .. past + i.
            allowed = torch.ones(s, past + s, dtype=torch.bool, device=x.device).tril(diagonal=past)
            attn_mask = allowed if attn_mask is None else attn_mask & allowed
        y = F.scaled_dot_product_attention(
            q, k, v, attn_mask=attn_mask, dropout_p=self.dropout if self.training else 0.0, is_causal=is_causal
        )
        return self.out(y.transpose(1, 2).reshape(b, s, d))
