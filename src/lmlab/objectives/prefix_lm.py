"""Prefix language modelling (T5/UniLM): each block is split at a random point; the prefix is read
bidirectionally and the rest is predicted token by token, on the prefix_lm layout."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from lmlab.data.blocks import Block
from lmlab.heads import IGNORE, LMHead
from lmlab.models import Backbone, ModelConfig
from lmlab.objectives.base import Objective, ObjectiveOutput, predict_tokens, token_prediction_flops


@dataclass
class PrefixLMConfig:
    name: str = "prefix_lm"


class PrefixLM(Objective):
    Config = PrefixLMConfig
    layout = "prefix_lm"

    def transform(self, block: Block, rng: np.random.Generator) -> dict[str, np.ndarray]:
        """Prefix length uniform in [1, n_real - 1]; labels[t] = ids[t + 1] from the prefix's last position on."""
        ids, n_real = block.ids, block.n_real
        prefix = int(rng.integers(1, max(2, n_real)))
        labels = np.full_like(ids, IGNORE)
        labels[prefix - 1 : n_real - 1] = ids[prefix:n_real]
        return {"input_ids": ids, "labels": labels, "prefix_length": np.asarray(prefix)}

    def build_head(self, model_cfg: ModelConfig) -> nn.Module:
        return LMHead()

    def forward(self, backbone: Backbone, head: nn.Module, batch: dict[str, torch.Tensor]) -> ObjectiveOutput:
        hidden = backbone(batch["input_ids"], batch.get("padding_mask"), prefix_lengths=batch["prefix_length"])
        return predict_tokens(hidden, batch["labels"], head, backbone)

    def flops_per_batch(self, backbone: Backbone, batch: dict[str, torch.Tensor]) -> int:
        return token_prediction_flops(
            backbone, batch, head_flops_per_target=2 * backbone.cfg.d_model * backbone.cfg.vocab_size
        )


OBJECTIVE = PrefixLM
