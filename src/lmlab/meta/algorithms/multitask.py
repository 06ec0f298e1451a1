"""The supervised baseline, at the same outer steps over the same episodes: for class episodes one classifier over
every meta-train class, trained on the episodes' examples with their pool-wide labels; for domain episodes plain
causal language modelling of the episodes' text. At meta-test it adapts like every method (class episodes: from a
fresh head)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from lmlab.meta.algorithms.base import AlgorithmConfig, MetaAlgorithm, accuracy
from lmlab.meta.episodes import Episode
from lmlab.meta.inner import Prediction
from lmlab.models import Backbone


@dataclass
class MultitaskConfig(AlgorithmConfig):
    name: str = "multitask"


class Multitask(MetaAlgorithm):
    Config = MultitaskConfig

    @classmethod
    def training_work(cls, *, steps: int, inner_steps: int, support_rows: int, query_rows: int) -> float | None:
        return float(steps)  # the unit: one multitask step

    def __init__(
        self, cfg: MultitaskConfig, backbone: Backbone, train_classes: list[str], kind: str = "classes"
    ) -> None:
        super().__init__(cfg, backbone, train_classes, kind)
        self.class_ids = {name: i for i, name in enumerate(train_classes)}
        self.classifier = nn.Linear(backbone.cfg.d_model, len(train_classes)) if kind == "classes" else None

    def episode_loss(self, episode: Episode) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        batch = episode.whole()
        out = self.learner.plain(batch) or self._pool_wide(episode, batch)
        return out.loss, {"loss": out.loss.detach(), "acc": accuracy(out.correct, out.total)}

    def _pool_wide(self, episode: Episode, batch: dict[str, torch.Tensor]) -> Prediction:
        """The episode's examples classified among every meta-train class."""
        assert self.classifier is not None
        ids = torch.tensor([self.class_ids[c] for c in episode.classes], device=batch["label"].device)
        labels = ids[batch["label"]]
        out = self.classifier(self.learner(batch))
        return Prediction(F.cross_entropy(out, labels), (out.detach().argmax(-1) == labels).sum(), len(labels))


ALGORITHM = Multitask
