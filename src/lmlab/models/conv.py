"""The convolutional mixer: lightweight convolution (Wu et al. 2019, "Pay Less Attention") in place of
self-attention."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from lmlab.models.attention import LayerCache, MixContext


class LightweightConv(nn.Module):
    """GLU input projection, a depthwise convolution whose kernel (softmax-normalised over its width) is shared by
    the channels of each head, and an output projection. Causal layouts pad on the left only, so position t sees
    positions t - kernel + 1 .. t; incremental decoding keeps the last kernel - 1 inputs in the cache."""

    def __init__(self, d_model: int, n_heads: int, kernel_size: int, dropout: float, bias: bool = True) -> None:
        super().__init__()
        self.n_heads = n_heads
        self.kernel_size = kernel_size
        self.inp = nn.Linear(d_model, 2 * d_model, bias=bias)
        self.kernel = nn.Parameter(torch.zeros(n_heads, kernel_size))
        self.out = nn.Linear(d_model, d_model, bias=bias)
        self.dropout = dropout

    def forward(self, x: torch.Tensor, ctx: MixContext, cache: LayerCache | None = None) -> torch.Tensor:
        d = x.shape[-1]
        h = F.glu(self.inp(x), dim=-1)
        if ctx.padding_mask is not None:
            h = h * ctx.padding_mask[..., None].to(h.dtype)
        h = h.transpose(1, 2)  # (B, D, S)
        k = self.kernel_size
        if ctx.causal:
            past = h.new_zeros(h.shape[0], d, k - 1) if cache is None or cache.conv is None else cache.conv
            h = torch.cat([past, h], dim=2)
            if cache is not None:
                cache.conv = h[:, :, h.shape[2] - (k - 1) :]
        else:
            h = F.pad(h, ((k - 1) // 2, k // 2))
        weight = F.dropout(F.softmax(self.kernel, dim=-1), self.dropout, self.training)
        weight = weight.repeat_interleave(d // self.n_heads, dim=0)[:, None, :].to(h.dtype)  # (D, 1, k)
        return self.out(F.conv1d(h, weight, groups=d).transpose(1, 2))
