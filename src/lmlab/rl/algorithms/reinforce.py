"""REINFORCE with a baseline: the advantage is the reward minus the mean reward of the whole batch."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from lmlab.rl.algorithms.base import RewardAlgorithm, RLAlgorithmConfig


@dataclass
class ReinforceConfig(RLAlgorithmConfig):
    name: str = "reinforce"


class Reinforce(RewardAlgorithm):
    Config = ReinforceConfig

    def advantages(self, rewards: torch.Tensor) -> torch.Tensor:
        return rewards - rewards.mean()


ALGORITHM = Reinforce
