"""Causal language modelling (GPT): predict every next token, on the decoder layout."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from lmlab.data.blocks import Block
from lmlab.data.tokenizer import PAD, TrainedTokenizer
from lmlab.heads import IGNORE, LMHead
from lmlab.models import Backbone, ModelConfig
from lmlab.objectives.base import Objective, ObjectiveOutput, predict_tokens, token_prediction_flops


@dataclass
class CLMConfig:
    name: str = "clm"


class CausalLM(Objective):
    Config = CLMConfig
    layout = "decoder"

    def __init__(self, cfg: CLMConfig, tokenizer: TrainedTokenizer) -> None:
        super().__init__(cfg, tokenizer)
        self.pad_id = tokenizer.token_id(PAD)

    def transform(self, block: Block, rng: np.random.Generator) -> dict[str, np.ndarray]:
        """labels[t] = ids[t + 1]; the last position and padding have nothing to predict."""
        ids = block.ids
        labels = np.full_like(ids, IGNORE)
        labels[:-1] = np.where(ids[1:] == self.pad_id, IGNORE, ids[1:])
        return {"input_ids": ids, "labels": labels}

    def build_head(self, model_cfg: ModelConfig) -> nn.Module:
        return LMHead()

    def forward(self, backbone: Backbone, head: nn.Module, batch: dict[str, torch.Tensor]) -> ObjectiveOutput:
        return predict_tokens(backbone(batch["input_ids"], batch.get("padding_mask")), batch["labels"], head, backbone)

    def flops_per_batch(self, backbone: Backbone, batch: dict[str, torch.Tensor]) -> int:
        d, vocab = backbone.cfg.d_model, backbone.cfg.vocab_size
        return token_prediction_flops(backbone, batch, head_flops_per_target=2 * d * vocab)


OBJECTIVE = CausalLM
