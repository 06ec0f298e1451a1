"""Prototypical networks (Snell et al., 2017): a class is the mean of its support embeddings, a query is scored by
its negative squared distance to each; meta-training minimises the query loss of that classifier. Adapting to a
new episode is computing its prototypes (no learning rate, no steps)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from lmlab.meta.algorithms.base import AlgorithmConfig, EpisodeScore, MetaAlgorithm, accuracy
from lmlab.meta.episodes import Episode


@dataclass
class ProtoNetConfig(AlgorithmConfig):
    name: str = "protonet"


class ProtoNet(MetaAlgorithm):
    Config = ProtoNetConfig
    adapts_by_gradient = False
    kinds = ("classes",)

    def query_logits(self, episode: Episode) -> torch.Tensor:
        support = self.learner(episode.support)
        n_way = len(episode.classes)
        prototypes = torch.zeros(n_way, support.shape[1], dtype=support.dtype, device=support.device)
        prototypes = prototypes.index_add(0, episode.support["label"], support)
        prototypes = prototypes / torch.bincount(episode.support["label"], minlength=n_way)[:, None]
        return -torch.cdist(self.learner(episode.query), prototypes).pow(2)

    def episode_loss(self, episode: Episode) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        out = self.query_logits(episode)
        loss = F.cross_entropy(out, episode.query["label"])
        correct = (out.detach().argmax(-1) == episode.query["label"]).sum()
        return loss, {"query_loss": loss.detach(), "query_acc": accuracy(correct, len(out))}

    def score(self, episode: Episode, steps: int, lr: float | Mapping[str, torch.Tensor]) -> EpisodeScore:
        with torch.no_grad():
            out = self.query_logits(episode)
        labels = episode.query["label"]
        return EpisodeScore(int((out.argmax(-1) == labels).sum()), len(labels), [float(F.cross_entropy(out, labels))])


ALGORITHM = ProtoNet
