"""The two kinds of RL algorithm. A reward algorithm samples `group` completions per prompt, scores them with the
reward, and takes policy-gradient steps on advantages with a KL penalty to the reference (it says how a group's
rewards become advantages). A preference algorithm (DPO) learns from (prompt, chosen, rejected) pairs, its implicit
reward the policy's log-probability ratio to the reference."""

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
    Config: ClassVar[type]

    def __init__(self, cfg: Any) -> None:
        self.cfg = cfg

    @classmethod
    def parse_config(cls, cfg: Any) -> Any:
        return parse_node(cfg, cls.Config, "rl.")


class RewardAlgorithm(RLAlgorithm):
    Config: ClassVar[type[RLAlgorithmConfig]]

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


@dataclass
class PreferenceConfig:
    name: str = "???"
    pairs_per_step: int = 8
    beta: float = 0.1  # how far from the reference the implicit reward lets the policy go

    def validate(self) -> None:
        at_least("rl.pairs_per_step", self.pairs_per_step, 1)
        if not self.beta > 0:
            raise InputError(f"rl.beta must be > 0, got {self.beta}")


class PreferenceAlgorithm(RLAlgorithm):
    Config: ClassVar[type[PreferenceConfig]]

    @abstractmethod
    def loss(self, chosen: torch.Tensor, rejected: torch.Tensor) -> torch.Tensor:
        """The mean loss over pairs, from the implicit rewards (beta x log-ratio to the reference) of each side."""
