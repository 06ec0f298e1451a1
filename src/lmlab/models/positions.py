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


def make_positions(kind: str, max_positions: int, d_model: int) -> nn.Module:
    return {"learned": LearnedPositions, "sinusoidal": SinusoidalPositions}[kind](max_positions, d_model)
