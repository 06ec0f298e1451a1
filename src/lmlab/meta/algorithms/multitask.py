"""The supervised baseline: one classifier over every meta-train class, trained on the episodes' examples with
their pool-wide labels; at meta-test it adapts like every method, from a fresh head."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from lmlab.meta.algorithms.base import AlgorithmConfig, MetaAlgorithm, accuracy
from lmlab.meta.episodes import Episode
from lmlab.models import Backbone


@dataclass
class MultitaskConfig(AlgorithmConfig):
    name: str = "multitask"


class Multitask(MetaAlgorithm):
    Config = MultitaskConfig

    def __init__(self, cfg: MultitaskConfig, backbone: Backbone, train_classes: list[str]) -> None:
        super().__init__(cfg, backbone, train_classes)
        self.class_ids = {name: i for i, name in enumerate(train_classes)}
        self.classifier = nn.Linear(backbone.cfg.d_model, len(train_classes))

    def episode_loss(self, episode: Episode) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        batch = episode.whole()
        ids = torch.tensor([self.class_ids[c] for c in episode.classes], device=batch["label"].device)
        labels = ids[batch["label"]]
        out = self.classifier(self.encoder(batch))
        loss = F.cross_entropy(out, labels)
        return loss, {"loss": loss.detach(), "acc": accuracy(out.detach(), labels)}


ALGORITHM = Multitask
