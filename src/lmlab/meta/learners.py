"""What an episode's inner loop adapts, and how a batch is scored as a function of the fast weights.

- `Classifier` (class episodes): a fresh zero N-way linear head over pooled features, plus the backbone tensors
  `meta.adapt` names; cross-entropy over the episode's labels.
- `LanguageModel` (domain episodes, "MetaGPT"): a decoder's own tied LM head, next-token cross-entropy; the fast
  weights are the `meta.adapt` tensors (the head is the token embedding, so `meta.adapt=head` has no meaning).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from lmlab.errors import InputError
from lmlab.heads import LMHead, predict_tokens
from lmlab.meta.episodes import Episode
from lmlab.meta.inner import Fast, Prediction, Predictor, adapted_names
from lmlab.models import Backbone
from lmlab.tasks.base import contextual, pooled

HEAD_WEIGHT, HEAD_BIAS = "head.weight", "head.bias"


class Learner(nn.Module, ABC):
    kind: ClassVar[str]  # the episodes it learns from: "classes" or "domains"

    def __init__(self, backbone: Backbone, adapt: str, top_k: int) -> None:
        super().__init__()
        self.backbone = backbone
        self.names = adapted_names(self, backbone.cfg.n_layers, adapt, top_k)

    def own(self, detach: bool) -> Fast:
        """The module's adapted tensors: themselves (meta-training differentiates through them) or detached copies."""
        params = dict(self.named_parameters())
        return {n: params[n].detach().requires_grad_() if detach else params[n] for n in self.names}

    @abstractmethod
    def start(self, episode: Episode, detach: bool) -> Fast:
        """The fast weights an episode's adaptation starts from."""

    @abstractmethod
    def bind(self, batch: dict[str, torch.Tensor], fast: Fast) -> Predictor:
        """The batch's prediction as a function of fast weights shaped like `fast`; whatever does not depend on
        them is computed now, once (with the current grad mode)."""

    @abstractmethod
    def plain(self, batch: dict[str, torch.Tensor]) -> Prediction | None:
        """The ordinary supervised loss of a batch with the module's own weights, or None where the episode's
        labels mean nothing outside it (class episodes)."""


class Classifier(Learner):
    kind = "classes"

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """One vector per example, read as fully as the backbone's layout allows (as classification does)."""
        return pooled(self.backbone, contextual(self.backbone, batch), batch)

    def start(self, episode: Episode, detach: bool) -> Fast:
        """A zero head: every episode's labels are a new permutation, so no class-specific start can be learned,
        and from zero the first step's weights are the (centred) support means of each class."""
        like = next(self.parameters())
        n_way, dim = len(episode.classes), self.backbone.cfg.d_model
        head = {
            HEAD_WEIGHT: torch.zeros(n_way, dim, dtype=like.dtype, device=like.device, requires_grad=True),
            HEAD_BIAS: torch.zeros(n_way, dtype=like.dtype, device=like.device, requires_grad=True),
        }
        return {**self.own(detach), **head}

    def bind(self, batch: dict[str, torch.Tensor], fast: Fast) -> Predictor:
        labels = batch["label"]
        encoder = [n for n in fast if n not in (HEAD_WEIGHT, HEAD_BIAS)]
        fixed = None if encoder else self(batch)

        def predict(f: Fast) -> Prediction:
            x = fixed if fixed is not None else functional_call(self, {n: f[n] for n in encoder}, (batch,))
            out = F.linear(x, f[HEAD_WEIGHT], f[HEAD_BIAS])
            correct = (out.detach().argmax(-1) == labels).sum()
            return Prediction(F.cross_entropy(out, labels), correct, len(labels))

        return predict

    def plain(self, batch: dict[str, torch.Tensor]) -> Prediction | None:
        return None


class LanguageModel(Learner):
    kind = "domains"

    def __init__(self, backbone: Backbone, adapt: str, top_k: int) -> None:
        if backbone.cfg.layout != "decoder":
            raise InputError(
                f"domain episodes adapt a language model: the starting backbone must have model.layout=decoder (a "
                f"causal LM run, e.g. objective=clm), got {backbone.cfg.layout}"
            )
        if adapt == "head":
            raise InputError(
                "meta.adapt=head: a language model's head is its token embedding (tied), not a fresh head; use "
                "meta.adapt=top_k_blocks or all with domain episodes"
            )
        super().__init__(backbone, adapt, top_k)
        self.head = LMHead()

    def forward(self, batch: dict[str, torch.Tensor]) -> Prediction:
        hidden = self.backbone(batch["input_ids"], batch["padding_mask"])
        out = predict_tokens(hidden, batch["labels"], self.head, self.backbone)
        return Prediction(out.loss, out.n_correct, int(out.n_targets))

    def start(self, episode: Episode, detach: bool) -> Fast:
        return self.own(detach)

    def bind(self, batch: dict[str, torch.Tensor], fast: Fast) -> Predictor:
        return lambda f: functional_call(self, f, (batch,))

    def plain(self, batch: dict[str, torch.Tensor]) -> Prediction | None:
        return self(batch)


LEARNERS: dict[str, type[Learner]] = {cls.kind: cls for cls in (Classifier, LanguageModel)}
