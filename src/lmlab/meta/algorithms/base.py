"""What every meta-learning algorithm provides: its outer loss on an episode (what meta-training minimises) and
how it adapts to a new episode at meta-test time.

The default adaptation is the shared evaluation protocol: the learner's starting fast weights (a fresh zero N-way
head for class episodes; the `meta.adapt` tensors, always) trained for a fixed number of SGD steps on the support
set, the query scored after every step.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from lmlab.config_schema import at_least, choice, parse_node
from lmlab.errors import InputError
from lmlab.meta.episodes import Episode
from lmlab.meta.inner import ADAPT, detached, inner_loop
from lmlab.meta.learners import LEARNERS, Learner
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
    # The episode kinds (learners) the method works with.
    kinds: ClassVar[tuple[str, ...]] = ("classes", "domains")
    # Whether meta-training runs an inner loop of meta.inner_steps per episode (MAML, FOMAML, Reptile).
    trains_with_inner_loop: ClassVar[bool] = False

    @classmethod
    def training_work(cls, *, steps: int, inner_steps: int, support_rows: int, query_rows: int) -> float | None:
        """A text-domain run's training compute in multitask steps (one forward-backward pass over an episode's
        support and query rows); None where this model of the work does not fit the method."""
        return None

    def __init__(self, cfg: Any, backbone: Backbone, train_classes: list[str], kind: str = "classes") -> None:
        super().__init__()
        if kind not in self.kinds:
            raise InputError(f"meta={cfg.name} needs {' or '.join(self.kinds)} episodes; these episodes are {kind}")
        self.cfg = cfg
        self.learner: Learner = LEARNERS[kind](backbone, cfg.adapt, cfg.top_k)

    @classmethod
    def parse_config(cls, cfg: Any) -> Any:
        return parse_node(cfg, cls.Config, "meta.")

    @property
    def backbone(self) -> Backbone:
        return self.learner.backbone

    @property
    def names(self) -> list[str]:
        """The backbone tensors the inner loop adapts."""
        return self.learner.names

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
        """Adapt to `episode` from the learner's start with `steps` SGD steps at `lr`, scoring the query after each."""
        with torch.enable_grad():
            fast = self.learner.start(episode, detach=True)
            support = self.learner.bind(episode.support, fast)
            with torch.no_grad():
                query = self.learner.bind(episode.query, fast)
            losses = []
            for step in range(steps + 1):
                with torch.no_grad():
                    out = query(fast)
                losses.append(float(out.loss))
                if step < steps:
                    fast = detached(inner_loop(support, fast, 1, lr, False)[0])
        return EpisodeScore(int(out.correct), out.total, losses)


def accuracy(correct: torch.Tensor, total: int) -> torch.Tensor:
    return correct.float() / total
