"""Sequence classification as lmlab fine-tunes it, for `transformers`' AutoModelForSequenceClassification with
`trust_remote_code=True`. lmlab's export copies this file beside the weights; it needs only torch and transformers.

No stock HF class reads a sentence the way lmlab does: lmlab pools the mean of the real tokens' hidden states
(encoders; pretraining never taught them a [CLS] summary) or the last real token's (decoders), then applies BERT's
pooler (dense + tanh) and a linear classifier. Inputs are padded on the right, as lmlab's tokenizer export says.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from transformers import AutoModel, BertConfig, GPT2Config, LlamaConfig, PreTrainedModel
from transformers.modeling_outputs import SequenceClassifierOutput


class _LmlabClassifier(PreTrainedModel):
    base_model_prefix = "backbone"

    def __init__(self, config) -> None:
        super().__init__(config)
        # BERT's own pooler reads [CLS]; lmlab's head has its own, after its pooling.
        self.backbone = AutoModel.from_config(
            config, **({"add_pooling_layer": False} if config.model_type == "bert" else {})
        )
        self.pool = nn.Linear(config.hidden_size, config.hidden_size)
        self.drop = nn.Dropout(getattr(config, "lmlab_head_dropout", 0.0))
        self.out = nn.Linear(config.hidden_size, config.num_labels)
        self.post_init()

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        **kwargs,
    ) -> SequenceClassifierOutput:
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        extra = {} if token_type_ids is None else {"token_type_ids": token_type_ids}
        hidden = self.backbone(input_ids=input_ids, attention_mask=attention_mask, **extra).last_hidden_state
        if self.config.lmlab_pooling == "last":
            pooled = hidden[torch.arange(hidden.shape[0], device=hidden.device), attention_mask.sum(1) - 1]
        else:
            real = attention_mask.unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * real).sum(1) / real.sum(1).clamp(min=1.0)
        logits = self.out(self.drop(torch.tanh(self.pool(pooled))))
        loss = None if labels is None else F.cross_entropy(logits, labels)
        return SequenceClassifierOutput(loss=loss, logits=logits)


class LmlabBertForSequenceClassification(_LmlabClassifier):
    config_class = BertConfig


class LmlabGPT2ForSequenceClassification(_LmlabClassifier):
    config_class = GPT2Config


class LmlabLlamaForSequenceClassification(_LmlabClassifier):
    config_class = LlamaConfig
