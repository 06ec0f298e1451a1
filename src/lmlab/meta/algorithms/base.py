"""What every meta-learning algorithm provides: its outer loss on an episode (what meta-training minimises) and
how it adapts to a new episode at meta-test time.

The default adaptation is the shared evaluation protocol: a fresh zero N-way head (and the encoder tensors
`meta.adapt` names) trained for a fixed number of SGD steps on the support set, the query scored after every step.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from lmlab.config_schema import at_least, choice, parse_node
from lmlab.meta.episodes import Episode
from lmlab.meta.inner import ADAPT, Encoder, FastWeights, adapted_names, features, inner_loop, logits, starting_weights
from lmlab.models import Backbone


@dataclass
class AlgorithmConfig:
    name: str = "???"
    # What the inner loop (and meta-test adaptation, for every method alike) trains besides the fresh head:
    # head only | the top `top_k` blocks | all
    adapt: str = "head"
    top_k: int = 1
    inner_steps: int = 5
    inner_lr: float = 0.3
    tasks_per_step: int = 4  # episodes per outer (optimiser) step

    def validate(self) -> None:
        choice("meta.adapt", self.adapt, ADAPT)
        at_least("meta.top_k", self.top_k, 1)
        at_least("meta.inner_steps", self.inner_steps, 1)
        at_least("meta.inner_lr", self.inner_lr, 0)
        at_least("meta.tasks_per_step", self.tasks_per_step, 1)


@dataclass
class EpisodeScore:
    """One meta-test episode: correct query predictions, and the query loss after 0, 1, ... adaptation steps."""

    correct: int
    total: int
    query_losses: list[float]

    @property
    def accuracy(self) -> float:
        return self.correct / self.total


class MetaAlgorithm(nn.Module, ABC):
    Config: ClassVar[type[AlgorithmConfig]]
    # False: the method trains nothing before meta-test (the plain fine-tuning baseline).
    meta_trains: ClassVar[bool] = True
    # False: adaptation takes no learning rate (prototypes), so none is chosen on meta-val.
    adapts_by_gradient: ClassVar[bool] = True

    def __init__(self, cfg: Any, backbone: Backbone, train_classes: list[str]) -> None:
        super().__init__()
        self.cfg = cfg
        self.encoder = Encoder(backbone)
        self.names = adapted_names(self.encoder, cfg.adapt, cfg.top_k)

    @classmethod
    def parse_config(cls, cfg: Any) -> Any:
        return parse_node(cfg, cls.Config, "meta.")

    @property
    def backbone(self) -> Backbone:
        return self.encoder.backbone

    @abstractmethod
    def episode_loss(self, episode: Episode) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The outer loss of one episode (differentiable w.r.t. the meta-parameters) and metrics to log."""

    def meta_gradients(self, episodes: list[Episode]) -> dict[str, torch.Tensor]:
        """Accumulate the meta-gradient of a batch of episodes into `.grad`; the batch's mean metrics."""
        results = [self.episode_loss(e) for e in episodes]
        torch.stack([loss for loss, _ in results]).mean().backward()
        return {key: torch.stack([m[key] for _, m in results]).mean() for key in results[0][1]}

    def inner_lrs(self) -> float | Mapping[str, torch.Tensor]:
        """The inner loop's step size (one for all tensors; Meta-SGD learns one per tensor)."""
        return float(self.cfg.inner_lr)

    def score(self, episode: Episode, steps: int, lr: float | Mapping[str, torch.Tensor]) -> EpisodeScore:
        """Adapt to `episode` from a fresh head (+ the `meta.adapt` tensors) with `steps` SGD steps at `lr`."""
        n_way = len(episode.classes)
        with torch.enable_grad():
            fast = starting_weights(self.encoder, self.names, n_way, detach=True)
            fixed_s = fixed_q = None
            if not fast.encoder:
                with torch.no_grad():
                    fixed_s, fixed_q = self.encoder(episode.support), self.encoder(episode.query)
            losses = []
            for step in range(steps + 1):
                with torch.no_grad():
                    x = fixed_q if fixed_q is not None else features(self.encoder, fast.encoder, episode.query)
                    out = logits(fast.head, x)
                    losses.append(float(F.cross_entropy(out, episode.query["label"])))
                if step < steps:
                    fast, _ = inner_loop(self.encoder, fast, episode.support, 1, lr, False, fixed_s)
                    fast = FastWeights(
                        *(
                            {n: t.detach().requires_grad_() for n, t in part.items()}
                            for part in (fast.encoder, fast.head)
                        )
                    )
        correct = int((out.argmax(-1) == episode.query["label"]).sum())
        return EpisodeScore(correct, len(episode.query["label"]), losses)


def accuracy(out: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    return (out.argmax(-1) == labels).float().mean()
