"""GRPO (Shao et al., 2024): advantages are the rewards normalised within each prompt's group (minus the group mean,
over the group's standard deviation); a group whose rewards are all equal teaches nothing (advantage 0)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from lmlab.errors import InputError
from lmlab.rl.algorithms.base import RewardAlgorithm, RLAlgorithmConfig


@dataclass
class GRPOConfig(RLAlgorithmConfig):
    name: str = "grpo"
    eps: float = 1e-4  # added to the group's standard deviation

    def validate(self) -> None:
        super().validate()
        if self.group < 2:
            raise InputError(f"rl=grpo normalises within a prompt's group: rl.group must be >= 2, got {self.group}")


class GRPO(RewardAlgorithm):
    Config = GRPOConfig

    def advantages(self, rewards: torch.Tensor) -> torch.Tensor:
        centred = rewards - rewards.mean(1, keepdim=True)
        return centred / (rewards.std(1, keepdim=True) + self.cfg.eps)


ALGORITHM = GRPO
