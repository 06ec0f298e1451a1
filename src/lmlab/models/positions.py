"""Absolute position encodings added to the token embeddings."""

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


def make_positions(kind: str, max_positions: int, d_model: int) -> nn.Module | None:
    """The additive position encoding, or None for rotary (which acts inside attention)."""
    if kind == "rotary":
        return None
    return {"learned": LearnedPositions, "sinusoidal": SinusoidalPositions}[kind](max_positions, d_model)
