"""RLOO (Ahmadian et al., 2024): each completion's baseline is the mean reward of the *other* completions of its
prompt (leave one out), an unbiased baseline that does not depend on the sample itself."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from lmlab.errors import InputError
from lmlab.rl.algorithms.base import RewardAlgorithm, RLAlgorithmConfig


@dataclass
class RLOOConfig(RLAlgorithmConfig):
    name: str = "rloo"

    def validate(self) -> None:
        super().validate()
        if self.group < 2:
            raise InputError(f"rl=rloo needs rl.group >= 2 (a baseline from the other samples), got {self.group}")


class RLOO(RewardAlgorithm):
    Config = RLOOConfig

    def advantages(self, rewards: torch.Tensor) -> torch.Tensor:
        group = rewards.shape[1]
        others = (rewards.sum(1, keepdim=True) - rewards) / (group - 1)
        return rewards - others


ALGORITHM = RLOO
