"""Heads and constants that pretraining objectives and downstream tasks share."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from lmlab.models import Backbone

# The label of a position with nothing to predict.
IGNORE = -100


class LMHead(nn.Module):
    """The (tied) output projection; GPT's head has no parameters of its own beyond it."""

    def forward(self, hidden: torch.Tensor, backbone: Backbone) -> torch.Tensor:
        return backbone.output_projection(hidden)


@dataclass
class TokenPrediction:
    loss: torch.Tensor  # mean cross-entropy over the predicted positions
    n_targets: torch.Tensor
    n_correct: torch.Tensor  # top-1 hits


def predict_tokens(hidden: torch.Tensor, labels: torch.Tensor, head: nn.Module, backbone: Backbone) -> TokenPrediction:
    """Cross-entropy at the positions whose label is not IGNORE. The head, and so the vocabulary projection,
    runs only at those positions (sparse prediction)."""
    selected = labels != IGNORE
    targets = labels[selected]
    logits = head(hidden[selected], backbone)
    logits = logits.float() if logits.dtype in (torch.float16, torch.bfloat16) else logits  # float64 stays
    if targets.numel() == 0:
        zero = targets.new_zeros(())
        return TokenPrediction(logits.sum() * 0.0, zero, zero)
    loss = F.cross_entropy(logits, targets)
    return TokenPrediction(loss, targets.new_tensor(targets.numel()), (logits.argmax(-1) == targets).sum())
