"""The plain baseline: no meta-training. At meta-test the starting encoder adapts like every method, from a fresh
head with the same steps (its learning rate chosen on meta-val)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from lmlab.meta.algorithms.base import AlgorithmConfig, MetaAlgorithm
from lmlab.meta.episodes import Episode


@dataclass
class FinetuneConfig(AlgorithmConfig):
    name: str = "finetune"


class Finetune(MetaAlgorithm):
    Config = FinetuneConfig
    meta_trains = False

    @classmethod
    def training_work(cls, *, steps: int, inner_steps: int, support_rows: int, query_rows: int) -> float | None:
        return 0.0

    def episode_loss(self, episode: Episode) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        raise NotImplementedError("meta=finetune does no meta-training")


ALGORITHM = Finetune
