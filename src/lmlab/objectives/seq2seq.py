"""What the encoder-decoder objectives share: a (source, target) example with fixed shapes, and the
encode-then-decode forward pass with its FLOPs count."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from lmlab.data.tokenizer import CLS, PAD, SEP, TrainedTokenizer
from lmlab.errors import InputError
from lmlab.heads import IGNORE, LMHead
from lmlab.models import Backbone, ModelConfig
from lmlab.objectives.base import Objective, ObjectiveOutput, predict_tokens


class Seq2SeqObjective(Objective):
    """The encoder reads `input_ids` (padded to a fixed length, real up to `n_real`); the decoder reads
    `decoder_input_ids` = [CLS] + target[:-1] and predicts `labels` = target (IGNORE after its end)."""

    layout = "encoder_decoder"

    def __init__(self, cfg, tokenizer: TrainedTokenizer) -> None:
        super().__init__(cfg, tokenizer)
        self.pad_id = tokenizer.token_id(PAD)
        self.start_id = tokenizer.token_id(CLS)
        self.eos_id = tokenizer.token_id(SEP)

    def example(
        self, source: np.ndarray, target: np.ndarray, source_len: int, target_len: int
    ) -> dict[str, np.ndarray]:
        if len(source) > source_len or len(target) > target_len:
            raise InputError(
                f"{type(self).__name__}: an example of {len(source)} source / {len(target)} target tokens does not "
                f"fit the fixed lengths {source_len} / {target_len}"
            )
        input_ids = np.full(source_len, self.pad_id, dtype=np.int64)
        input_ids[: len(source)] = source
        decoder_input_ids = np.full(target_len, self.pad_id, dtype=np.int64)
        decoder_input_ids[0] = self.start_id
        decoder_input_ids[1 : len(target)] = target[:-1]
        labels = np.full(target_len, IGNORE, dtype=np.int64)
        labels[: len(target)] = target
        return {
            "input_ids": input_ids,
            "decoder_input_ids": decoder_input_ids,
            "labels": labels,
            "n_real": np.asarray(len(source)),
        }

    def build_head(self, model_cfg: ModelConfig) -> nn.Module:
        return LMHead()

    def forward(self, backbone: Backbone, head: nn.Module, batch: dict[str, torch.Tensor]) -> ObjectiveOutput:
        mask = batch.get("padding_mask")
        hidden = backbone.decode(batch["decoder_input_ids"], backbone(batch["input_ids"], mask), mask)
        return predict_tokens(hidden, batch["labels"], head, backbone)

    def flops_per_batch(self, backbone: Backbone, batch: dict[str, torch.Tensor]) -> int:
        batch_size, source_len = batch["input_ids"].shape
        target_len = batch["decoder_input_ids"].shape[1]
        n_targets = int((batch["labels"] != IGNORE).sum())
        assert backbone.decoder is not None
        forward = (
            batch_size * source_len * backbone.stack.flops_per_token(source_len)
            + batch_size * target_len * backbone.decoder.flops_per_token(target_len, source_len)
            + n_targets * 2 * backbone.cfg.d_model * backbone.cfg.vocab_size
        )
        return 3 * forward
