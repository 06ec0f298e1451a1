"""What every reward-based algorithm shares: `group` samples per prompt, a KL penalty to the reference, and a
policy-gradient loss on advantages; an algorithm says how a group's rewards become advantages."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from lmlab.config_schema import at_least, choice, parse_node
from lmlab.errors import InputError
from lmlab.rl.kl import ESTIMATORS


@dataclass
class RLAlgorithmConfig:
    name: str = "???"
    group: int = 4  # completions sampled per prompt
    prompts_per_step: int = 8
    max_new_tokens: int = 16
    temperature: float = 1.0
    kl_coef: float = 0.05
    # k1: subtracted from the sequence reward; k3: a per-token loss term (see lmlab.rl.kl)
    kl_estimator: str = "k3"
    # Optimiser steps on each batch of rollouts; above 1 the loss uses the clipped probability ratio.
    updates_per_batch: int = 1
    clip_eps: float = 0.2

    def validate(self) -> None:
        at_least("rl.group", self.group, 1)
        at_least("rl.prompts_per_step", self.prompts_per_step, 1)
        at_least("rl.max_new_tokens", self.max_new_tokens, 1)
        at_least("rl.kl_coef", self.kl_coef, 0)
        at_least("rl.updates_per_batch", self.updates_per_batch, 1)
        at_least("rl.clip_eps", self.clip_eps, 0)
        choice("rl.kl_estimator", self.kl_estimator, ESTIMATORS)
        if not self.temperature > 0:
            raise InputError(f"rl.temperature must be > 0, got {self.temperature}")


class RLAlgorithm(ABC):
    Config: ClassVar[type[RLAlgorithmConfig]]

    def __init__(self, cfg: Any) -> None:
        self.cfg = cfg

    @classmethod
    def parse_config(cls, cfg: Any) -> Any:
        return parse_node(cfg, cls.Config, "rl.")

    @abstractmethod
    def advantages(self, rewards: torch.Tensor) -> torch.Tensor:
        """(prompts, group) rewards -> (prompts, group) advantages, one per completion."""

    def policy_loss(
        self, logprobs: torch.Tensor, old_logprobs: torch.Tensor, advantages: torch.Tensor, mask: torch.Tensor
    ) -> torch.Tensor:
        """The policy-gradient loss per completion token, averaged over tokens: -A ratio, with the ratio to the
        rollout policy clipped (PPO) when the same rollouts are used for more than one update."""
        ratio = torch.exp(logprobs - old_logprobs)
        adv = advantages.reshape(-1, 1)
        loss = -adv * ratio
        if self.cfg.updates_per_batch > 1:
            clipped = -adv * ratio.clamp(1 - self.cfg.clip_eps, 1 + self.cfg.clip_eps)
            loss = torch.maximum(loss, clipped)
        return (loss * mask).sum() / mask.sum().clamp(min=1)
