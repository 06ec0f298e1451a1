"""MAML (Finn et al., 2017): the outer loss is the query loss after `inner_steps` SGD steps on the support set,
differentiated through those steps (second order). `learn_inner_lr` learns one inner step size per adapted tensor
(Meta-SGD style, per tensor rather than per element)."""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import nn

from lmlab.meta.algorithms.base import AlgorithmConfig, MetaAlgorithm, accuracy
from lmlab.meta.episodes import Episode
from lmlab.meta.inner import inner_loop, second_order_attention
from lmlab.meta.learners import HEAD_BIAS, HEAD_WEIGHT
from lmlab.models import Backbone

log = logging.getLogger(__name__)


@dataclass
class MAMLConfig(AlgorithmConfig):
    name: str = "maml"
    first_order: bool = False  # drop the second derivatives (FOMAML)
    learn_inner_lr: bool = False


class MAML(MetaAlgorithm):
    Config = MAMLConfig
    trains_with_inner_loop = True

    @classmethod
    def training_work(cls, *, steps: int, inner_steps: int, support_rows: int, query_rows: int) -> float | None:
        """A first-order inner loop reads the support rows once per inner step, then the query rows once; MAML's
        second-order backward is not counted."""
        return steps * (inner_steps * support_rows + query_rows) / (support_rows + query_rows)

    def __init__(self, cfg: MAMLConfig, backbone: Backbone, train_classes: list[str], kind: str = "classes") -> None:
        super().__init__(cfg, backbone, train_classes, kind)
        self.log_lrs = nn.ParameterDict()
        if cfg.learn_inner_lr:
            start = math.log(max(cfg.inner_lr, 1e-8))
            for name in self._fast_names():
                self.log_lrs[_key(name)] = nn.Parameter(torch.tensor(start))
        if not cfg.first_order:
            log.info(
                "Second-order MAML: attention runs on the math SDPA kernel (the fused kernels have no double backward)"
            )

    def inner_lrs(self) -> float | Mapping[str, torch.Tensor]:
        if not self.cfg.learn_inner_lr:
            return float(self.cfg.inner_lr)
        return {name: self.log_lrs[_key(name)].exp() for name in self._fast_names()}

    def _fast_names(self) -> list[str]:
        """Every tensor the inner loop steps: the adapted backbone tensors and, for class episodes, the head."""
        return [*self.names, *((HEAD_WEIGHT, HEAD_BIAS) if self.learner.kind == "classes" else ())]

    def episode_loss(self, episode: Episode) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        second_order = not self.cfg.first_order
        with second_order_attention(second_order):
            start = self.learner.start(episode, detach=False)
            support = self.learner.bind(episode.support, start)
            fast, support_losses = inner_loop(support, start, self.cfg.inner_steps, self.inner_lrs(), second_order)
            out = self.learner.bind(episode.query, start)(fast)
        metrics = {
            "support_loss_before": support_losses[0],
            "support_loss_last_step": support_losses[-1],
            "query_loss": out.loss.detach(),
            "query_acc": accuracy(out.correct, out.total),
        }
        return out.loss, metrics


def _key(name: str) -> str:
    """A tensor name as a ParameterDict key (which may not contain dots)."""
    return name.replace(".", "__")


ALGORITHM = MAML
