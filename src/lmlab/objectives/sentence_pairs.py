"""What NSP and SOP share: BERT's sentence-pair inputs [CLS] A [SEP] B [SEP] with segment ids, MLM on top,
and a pair-classification head on [CLS]. Subclasses decide what B is and what the pair label means."""

from __future__ import annotations

from abc import abstractmethod
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from lmlab.data.blocks import Block, Stream
from lmlab.data.tokenizer import CLS, PAD, SEP, TrainedTokenizer
from lmlab.errors import InputError
from lmlab.models import Backbone, ModelConfig
from lmlab.objectives.base import Objective, ObjectiveOutput, predict_tokens, token_prediction_flops
from lmlab.objectives.mlm import MaskedLM, MLMConfig, MLMHead


@dataclass
class PairConfig(MLMConfig):
    name: str = ""
    pair_loss_weight: float = 1.0


@dataclass
class Segments:
    """Two spans [a0, a1) and [b0, b1) of the stream; positive means B follows A (NSP) or A, B are in order (SOP)."""

    a: tuple[int, int]
    b: tuple[int, int]


class PairHead(nn.Module):
    """BERT's pooler (dense + tanh on [CLS]) and a two-way classifier."""

    def __init__(self, d_model: int) -> None:
        super().__init__()
        self.pool = nn.Linear(d_model, d_model)
        self.classify = nn.Linear(d_model, 2)

    def forward(self, cls_hidden: torch.Tensor) -> torch.Tensor:
        return self.classify(torch.tanh(self.pool(cls_hidden)))


def consecutive_segments(block: Block, budget: int, rng: np.random.Generator) -> Segments:
    """A and B: consecutive runs of whole sentences of one document, starting at the sentence that holds the
    block's first token and filling up to `budget` tokens, split at a random sentence boundary (at the middle
    when only one sentence fits). The document's closing [SEP] is left out."""
    stream = block.stream
    doc_start, doc_end = stream.document_bounds(block.start)
    doc_end -= 1  # the [SEP] after every document
    first = max(int(stream.sentences_between(doc_start, block.start + 1)[-1]), doc_start)
    end = min(doc_end, first + budget)
    inner = stream.sentences_between(first + 1, end)
    split = int(rng.choice(inner)) if len(inner) else first + max(1, (end - first) // 2)
    return Segments((first, split), (split, max(split, end)))


def random_segment(stream: Stream, avoid: tuple[int, int], length: int, rng: np.random.Generator) -> tuple[int, int]:
    """Up to `length` tokens from a sentence start in a random document other than the one spanning `avoid`."""
    n_docs = stream.n_documents
    own = stream.document_index(avoid[0])
    if n_docs < 2:
        raise InputError("a random second segment needs a corpus of at least two documents")
    doc = int(rng.integers(n_docs - 1))
    doc += doc >= own
    start, end = stream.document_bounds(stream.document_start(doc))
    sentences = stream.sentences_between(start, end - 1)
    begin = int(rng.choice(sentences)) if len(sentences) else start
    return begin, min(end - 1, begin + length)


class SentencePairObjective(Objective):
    Config = PairConfig
    layout = "encoder"
    loss_is_nll = False

    def __init__(self, cfg: PairConfig, tokenizer: TrainedTokenizer) -> None:
        super().__init__(cfg, tokenizer)
        self.masker = MaskedLM(cfg, tokenizer)
        self.cls_id, self.sep_id, self.pad_id = (tokenizer.token_id(t) for t in (CLS, SEP, PAD))

    @abstractmethod
    def segments(self, block: Block, budget: int, rng: np.random.Generator) -> tuple[Segments, bool]:
        """The pair for this block and whether it is a positive."""

    def transform(self, block: Block, rng: np.random.Generator) -> dict[str, np.ndarray]:
        size = len(block.ids)
        budget = size - 3
        pair, positive = self.segments(block, budget, rng)
        a = block.stream.slice(*pair.a)
        b = block.stream.slice(*pair.b)
        # Trim A from the front and B from the back, so a positive A|B stays contiguous at the seam.
        la = min(len(a), max(budget // 2, budget - len(b)))
        a, b = a[len(a) - la :], b[: budget - la]
        ids = np.full(size, self.pad_id, dtype=np.int64)
        tokens = np.concatenate([[self.cls_id], a, [self.sep_id], b, [self.sep_id]])
        ids[: len(tokens)] = tokens
        segment_ids = np.zeros(size, dtype=np.int64)
        segment_ids[len(a) + 2 : len(tokens)] = 1
        inputs, labels = self.masker.mask(ids, rng)
        return {
            "input_ids": inputs,
            "labels": labels,
            "segment_ids": segment_ids,
            "pair_label": np.asarray(int(positive)),
            "n_real": np.asarray(len(tokens)),
        }

    def build_head(self, model_cfg: ModelConfig) -> nn.Module:
        if model_cfg.segments < 2:
            raise InputError(
                f"objective={self.cfg.name} feeds sentence pairs with segment ids; it needs model.segments=2 "
                f"(model.segments={model_cfg.segments} given)"
            )
        return nn.ModuleDict({"mlm": MLMHead(model_cfg), "pair": PairHead(model_cfg.d_model)})

    def forward(self, backbone: Backbone, head: nn.Module, batch: dict[str, torch.Tensor]) -> ObjectiveOutput:
        hidden = backbone(batch["input_ids"], batch.get("padding_mask"), segment_ids=batch["segment_ids"])
        mlm = predict_tokens(hidden, batch["labels"], head.get_submodule("mlm"), backbone)
        logits = head.get_submodule("pair")(hidden[:, 0]).float()
        pair_loss = F.cross_entropy(logits, batch["pair_label"])
        pair_acc = (logits.argmax(-1) == batch["pair_label"]).float().mean()
        loss = mlm.loss + self.cfg.pair_loss_weight * pair_loss
        name = self.cfg.name
        parts = {"mlm_loss": mlm.loss.detach(), f"{name}_loss": pair_loss.detach(), f"{name}_acc": pair_acc}
        return ObjectiveOutput(loss, mlm.n_targets, mlm.n_correct, parts)

    def flops_per_batch(self, backbone: Backbone, batch: dict[str, torch.Tensor]) -> int:
        d, vocab = backbone.cfg.d_model, backbone.cfg.vocab_size
        return token_prediction_flops(backbone, batch, head_flops_per_target=2 * (d * d + d * vocab))
