"""Position information: absolute encodings added to the embeddings, rotary, and T5's relative bias."""

from __future__ import annotations

import math

import torch
from torch import nn


class LearnedPositions(nn.Module):
    def __init__(self, max_positions: int, d_model: int) -> None:
        super().__init__()
        self.embedding = nn.Embedding(max_positions, d_model)

    def forward(self, seq_len: int, offset: int = 0) -> torch.Tensor:
        return self.embedding.weight[offset : offset + seq_len]


class SinusoidalPositions(nn.Module):
    """The fixed sin/cos table of Vaswani et al.; not a parameter, so it is not trained or saved."""

    table: torch.Tensor

    def __init__(self, max_positions: int, d_model: int) -> None:
        super().__init__()
        position = torch.arange(max_positions, dtype=torch.float32).unsqueeze(1)
        inv_freq = torch.exp(torch.arange(0, d_model, 2, dtype=torch.float32) * (-math.log(10000.0) / d_model))
        table = torch.zeros(max_positions, d_model)
        table[:, 0::2] = torch.sin(position * inv_freq)
        table[:, 1::2] = torch.cos(position * inv_freq)[:, : d_model // 2]
        self.register_buffer("table", table, persistent=False)

    def forward(self, seq_len: int, offset: int = 0) -> torch.Tensor:
        return self.table[offset : offset + seq_len]


class RotaryPositions(nn.Module):
    """RoPE (Su et al.): rotate each pair of query/key channels by an angle proportional to the position,
    so attention scores depend on relative offsets only. Returns (cos, sin) for `apply_rotary`."""

    cos: torch.Tensor
    sin: torch.Tensor

    def __init__(self, max_positions: int, head_dim: int, base: float = 10000.0) -> None:
        super().__init__()
        inv_freq = base ** (-torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim)
        angles = torch.outer(torch.arange(max_positions, dtype=torch.float32), inv_freq)
        self.register_buffer("cos", angles.cos(), persistent=False)
        self.register_buffer("sin", angles.sin(), persistent=False)

    def forward(self, seq_len: int, offset: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
        return self.cos[offset : offset + seq_len], self.sin[offset : offset + seq_len]


def apply_rotary(x: torch.Tensor, rotary: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """x: (B, H, S, Dh); channel pairs (2i, 2i+1) are rotated by the position's angle i."""
    cos, sin = (t.to(x.dtype) for t in rotary)
    even, odd = x[..., 0::2], x[..., 1::2]
    return torch.stack((even * cos - odd * sin, even * sin + odd * cos), dim=-1).flatten(-2)


class RelativePositionBias(nn.Module):
    """T5's relative attention bias: one learned scalar per head and bucket of the offset key - query.

    Offsets below half the buckets get a bucket each; larger ones share logarithmically wider buckets up to
    `max_distance`. Bidirectional stacks use separate buckets for keys before and after the query.
    """

    def __init__(self, n_heads: int, num_buckets: int, max_distance: int, bidirectional: bool) -> None:
        super().__init__()
        self.num_buckets = num_buckets
        self.max_distance = max_distance
        self.bidirectional = bidirectional
        self.bias = nn.Embedding(num_buckets, n_heads)

    def bucket(self, offset: torch.Tensor) -> torch.Tensor:
        """offset = key position - query position (long) -> bucket index."""
        buckets = self.num_buckets
        distance = -offset
        base = torch.zeros_like(offset)
        if self.bidirectional:
            buckets //= 2
            base = (distance < 0).long() * buckets
            distance = distance.abs()
        else:
            distance = distance.clamp(min=0)
        exact = buckets // 2
        scaled = torch.log(distance.float().clamp(min=1) / exact) / math.log(self.max_distance / exact)
        far = (exact + (scaled * (buckets - exact)).long()).clamp(max=buckets - 1)
        return base + torch.where(distance < exact, distance, far)

    def forward(self, q_len: int, k_len: int, offset: int = 0) -> torch.Tensor:
        """(1, H, q_len, k_len) bias for queries at positions offset .. offset + q_len - 1 and keys 0 .. k_len - 1."""
        device = self.bias.weight.device
        query = torch.arange(offset, offset + q_len, device=device)[:, None]
        key = torch.arange(k_len, device=device)[None, :]
        return self.bias(self.bucket(key - query)).permute(2, 0, 1)[None]


def make_positions(kind: str, max_positions: int, d_model: int) -> nn.Module | None:
    """The additive position encoding, or None for rotary and relative (which act inside attention)."""
    if kind in ("rotary", "relative"):
        return None
    return {"learned": LearnedPositions, "sinusoidal": SinusoidalPositions}[kind](max_positions, d_model)
