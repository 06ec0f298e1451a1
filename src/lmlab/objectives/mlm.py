"""Masked language modelling (BERT): dynamic 80/10/10 masking, a head evaluated only at masked positions."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from lmlab.data.blocks import Block
from lmlab.data.tokenizer import MASK, TrainedTokenizer
from lmlab.errors import InputError
from lmlab.heads import IGNORE
from lmlab.models import Backbone, ModelConfig
from lmlab.models.blocks import make_activation
from lmlab.objectives.base import Objective, ObjectiveOutput, predict_tokens, token_prediction_flops


@dataclass
class MLMConfig:
    name: str = "mlm"
    mask_prob: float = 0.15
    # Of the selected positions: this fraction becomes [MASK], this fraction a random token, the rest stay.
    mask_token_frac: float = 0.8
    random_token_frac: float = 0.1
    # Select whole words (a token and the subword pieces continuing it) rather than single tokens.
    whole_word: bool = False

    def validate(self) -> None:
        if not 0.0 < self.mask_prob < 1.0:
            raise InputError(f"objective.mask_prob must be in (0, 1), got {self.mask_prob}")
        fracs = (self.mask_token_frac, self.random_token_frac)
        if min(fracs) < 0 or sum(fracs) > 1:
            raise InputError(
                "objective.mask_token_frac and objective.random_token_frac must be >= 0 and sum to <= 1, "
                f"got {self.mask_token_frac} and {self.random_token_frac}"
            )


class MLMHead(nn.Module):
    """BERT's prediction head: dense + activation + LayerNorm, then the (tied) output projection plus a bias."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.dense = nn.Linear(cfg.d_model, cfg.d_model)
        self.act = make_activation(cfg.activation)
        self.norm = nn.LayerNorm(cfg.d_model, eps=cfg.norm_eps)
        self.bias = nn.Parameter(torch.zeros(cfg.vocab_size))

    def forward(self, hidden: torch.Tensor, backbone: Backbone) -> torch.Tensor:
        return backbone.output_projection(self.norm(self.act(self.dense(hidden)))) + self.bias


class MaskedLM(Objective):
    Config = MLMConfig
    layout = "encoder"
    hf_head = "masked_lm"  # BERT's MLM head

    def __init__(self, cfg: MLMConfig, tokenizer: TrainedTokenizer) -> None:
        super().__init__(cfg, tokenizer)
        self.mask_id = tokenizer.token_id(MASK)
        is_special = np.zeros(tokenizer.vocab_size, dtype=bool)
        is_special[tokenizer.special_ids] = True
        self.is_special = is_special
        self.ordinary_ids = np.flatnonzero(~is_special)
        self.continues_word = tokenizer.word_continuations() if cfg.whole_word else None

    def transform(self, block: Block, rng: np.random.Generator) -> dict[str, np.ndarray]:
        inputs, labels = self.mask(block.ids, rng)
        return {"input_ids": inputs, "labels": labels}

    def select(self, ids: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Positions to predict: each token (or each whole word) with probability mask_prob; never special tokens."""
        if self.continues_word is None:
            chosen = rng.random(ids.shape) < self.cfg.mask_prob
        else:
            word = np.cumsum(~self.continues_word[ids]) - 1  # a continuation belongs to the word before it
            chosen = (rng.random(word[-1] + 1) < self.cfg.mask_prob)[word]
        return chosen & ~self.is_special[ids]

    def mask(self, ids: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """BERT's corruption: (inputs, labels) with labels IGNORE except at the selected positions."""
        cfg = self.cfg
        selected = self.select(ids, rng)
        choice = rng.random(ids.shape)
        to_mask = selected & (choice < cfg.mask_token_frac)
        to_random = selected & (choice >= cfg.mask_token_frac) & (choice < cfg.mask_token_frac + cfg.random_token_frac)
        inputs = ids.copy()
        inputs[to_mask] = self.mask_id
        inputs[to_random] = rng.choice(self.ordinary_ids, size=int(to_random.sum()))
        return inputs, np.where(selected, ids, IGNORE)

    def build_head(self, model_cfg: ModelConfig) -> nn.Module:
        return MLMHead(model_cfg)

    def forward(self, backbone: Backbone, head: nn.Module, batch: dict[str, torch.Tensor]) -> ObjectiveOutput:
        return predict_tokens(backbone(batch["input_ids"], batch.get("padding_mask")), batch["labels"], head, backbone)

    def flops_per_batch(self, backbone: Backbone, batch: dict[str, torch.Tensor]) -> int:
        d, vocab = backbone.cfg.d_model, backbone.cfg.vocab_size
        return token_prediction_flops(backbone, batch, head_flops_per_target=2 * (d * d + d * vocab))


OBJECTIVE = MaskedLM
