"""What every objective provides: a batch transform, a head, a loss and a FLOPs count."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from lmlab import heads
from lmlab.config_schema import parse_node
from lmlab.data.blocks import Block
from lmlab.data.tokenizer import TrainedTokenizer
from lmlab.heads import IGNORE
from lmlab.models import Backbone, ModelConfig


@dataclass
class ObjectiveOutput:
    loss: torch.Tensor  # mean over targets; what is optimised
    n_targets: torch.Tensor  # how many predictions the loss averages over
    n_correct: torch.Tensor  # top-1 hits among those predictions
    # Components worth watching separately (e.g. generator and discriminator loss), logged as train/<key>, val/<key>.
    parts: dict[str, torch.Tensor] = field(default_factory=dict)


class Objective(ABC):
    """Subclasses set `Config` (a dataclass with a `name` field) and `layout`, and implement the four parts."""

    Config: ClassVar[type]
    layout: ClassVar[str] = "encoder"
    # Whether `loss` is a mean token negative log-likelihood, so exp(loss) is a perplexity worth logging.
    loss_is_nll: bool = True
    # Whether some of the head's parameters get no gradient in a step (a mixture trains one component's head per
    # batch): data-parallel training must then look for them (DDP's find_unused_parameters).
    leaves_parameters_unused: bool = False
    # The token an encoder-decoder of this objective reads before a prompt it continues (UL2's [S2S] mode), if any.
    mode_token: ClassVar[str | None] = None
    # The Hugging Face head an encoder trained on it exports as: "base" (the encoder alone) unless HF has its head.
    hf_head: ClassVar[str] = "base"

    def __init__(self, cfg: Any, tokenizer: TrainedTokenizer) -> None:
        self.cfg = cfg

    @classmethod
    def required_layout(cls, cfg: Any) -> str:
        """The backbone layout this objective needs with config `cfg` (an objective node)."""
        return cls.layout

    @classmethod
    def parse_config(cls, cfg: Any) -> Any:
        """The user's `objective` node as this objective's typed schema; unknown keys and bad types are errors."""
        return parse_node(cfg, cls.Config, "objective.")

    @abstractmethod
    def transform(self, block: Block, rng: np.random.Generator) -> dict[str, np.ndarray]:
        """One block -> the named arrays of one training example (fixed shapes for a given block size)."""

    @abstractmethod
    def build_head(self, model_cfg: ModelConfig) -> nn.Module:
        """The objective's head on top of the backbone."""

    @abstractmethod
    def forward(self, backbone: Backbone, head: nn.Module, batch: dict[str, torch.Tensor]) -> ObjectiveOutput:
        """Run backbone and head on a batch and compute the loss."""

    @abstractmethod
    def flops_per_batch(self, backbone: Backbone, batch: dict[str, torch.Tensor]) -> int:
        """Model FLOPs of one training step (forward + backward) on `batch`."""


def predict_tokens(hidden: torch.Tensor, labels: torch.Tensor, head: nn.Module, backbone: Backbone) -> ObjectiveOutput:
    """`lmlab.heads.predict_tokens` as an objective's output."""
    found = heads.predict_tokens(hidden, labels, head, backbone)
    return ObjectiveOutput(found.loss, found.n_targets, found.n_correct)


def token_prediction_flops(backbone: Backbone, batch: dict[str, torch.Tensor], head_flops_per_target: int) -> int:
    """Training FLOPs (3x forward) of the backbone on every position plus the head at the labelled ones."""
    batch_size, seq_len = batch["input_ids"].shape
    n_targets = int((batch["labels"] != IGNORE).sum())
    return 3 * (batch_size * seq_len * backbone.flops_per_token(seq_len) + n_targets * head_flops_per_target)
