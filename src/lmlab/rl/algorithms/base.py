"""The kinds of RL algorithm. A sampling algorithm samples `group` completions per prompt from the policy and scores
them with the reward: a reward algorithm then takes policy-gradient steps on advantages with a KL penalty to the
reference (it says how a group's rewards become advantages); an online preference algorithm lets the reward judge
each group, its best completion against its worst, and learns from those pairs as DPO does. A preference algorithm
(DPO) learns from a file of (prompt, chosen, rejected) pairs. Both preference kinds use the implicit reward, beta x
the policy's log-probability ratio to the reference."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F

from lmlab.config_schema import at_least, choice, parse_node
from lmlab.errors import InputError
from lmlab.rl.kl import ESTIMATORS


@dataclass
class SamplingConfig:
    name: str = "???"
    group: int = 4  # completions sampled per prompt
    prompts_per_step: int = 8
    max_new_tokens: int = 16
    temperature: float = 1.0

    def validate(self) -> None:
        at_least("rl.group", self.group, 1)
        at_least("rl.prompts_per_step", self.prompts_per_step, 1)
        at_least("rl.max_new_tokens", self.max_new_tokens, 1)
        if not self.temperature > 0:
            raise InputError(f"rl.temperature must be > 0, got {self.temperature}")


@dataclass
class RLAlgorithmConfig(SamplingConfig):
    kl_coef: float = 0.05
    # Adaptive KL (Ziegler et al., 2019): a per-token KL target in nats moves kl_coef toward it, at a rate of
    # completions per step / kl_horizon; unset (null), kl_coef stays fixed.
    kl_target: float | None = None
    kl_horizon: int = 10000
    # k1: subtracted from the sequence reward; k3: a per-token loss term (see lmlab.rl.kl)
    kl_estimator: str = "k3"
    # Optimiser steps on each batch of rollouts; above 1 the loss uses the clipped probability ratio.
    updates_per_batch: int = 1
    clip_eps: float = 0.2

    def validate(self) -> None:
        super().validate()
        at_least("rl.kl_coef", self.kl_coef, 0)
        at_least("rl.updates_per_batch", self.updates_per_batch, 1)
        at_least("rl.clip_eps", self.clip_eps, 0)
        at_least("rl.kl_horizon", self.kl_horizon, 1)
        choice("rl.kl_estimator", self.kl_estimator, ESTIMATORS)
        if self.kl_target is not None and not self.kl_target > 0:
            raise InputError(
                f"rl.kl_target must be > 0 (nats per token) or null for a fixed rl.kl_coef, got {self.kl_target}"
            )
        if self.kl_target is not None and self.kl_coef == 0:
            raise InputError("rl.kl_target adapts rl.kl_coef by a factor each step: it needs rl.kl_coef > 0, got 0")


class RLAlgorithm(ABC):
    Config: ClassVar[type]

    def __init__(self, cfg: Any) -> None:
        self.cfg = cfg

    @classmethod
    def parse_config(cls, cfg: Any) -> Any:
        return parse_node(cfg, cls.Config, "rl.")


class SamplingAlgorithm(RLAlgorithm):
    """Learns from completions it samples, scored by the reward (which, as a judge, also compares checkpoints)."""

    Config: ClassVar[type[SamplingConfig]]


class RewardAlgorithm(SamplingAlgorithm):
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
class PreferenceLossConfig:
    beta: float = 0.1  # how far from the reference the implicit reward lets the policy go
    loss: str = "sigmoid"  # sigmoid (DPO) | ipo

    def validate(self) -> None:
        if not self.beta > 0:
            raise InputError(f"rl.beta must be > 0, got {self.beta}")
        choice("rl.loss", self.loss, ("sigmoid", "ipo"))


def preference_loss(chosen: torch.Tensor, rejected: torch.Tensor, cfg: PreferenceLossConfig) -> torch.Tensor:
    """The mean loss over pairs from the implicit rewards (beta x log-ratio to the reference) of each side. DPO
    (Rafailov et al., 2023): -log sigmoid(chosen's - rejected's), ln 2 where the policy is the reference; IPO (Azar
    et al., 2023) regresses the log-ratio difference to 1 / (2 beta) instead, which does not push it without bound."""
    margin = chosen - rejected
    if cfg.loss == "ipo":
        return ((margin / cfg.beta - 1 / (2 * cfg.beta)) ** 2).mean()
    return -F.logsigmoid(margin).mean()


@dataclass
class PreferenceConfig(PreferenceLossConfig):
    name: str = "???"
    pairs_per_step: int = 8

    def validate(self) -> None:
        super().validate()
        at_least("rl.pairs_per_step", self.pairs_per_step, 1)


class PreferenceAlgorithm(RLAlgorithm):
    """Learns from a file of (prompt, chosen, rejected) pairs."""

    Config: ClassVar[type[PreferenceConfig]]

    def loss(self, chosen: torch.Tensor, rejected: torch.Tensor) -> torch.Tensor:
        return preference_loss(chosen, rejected, self.cfg)


@dataclass
class OnlinePreferenceConfig(SamplingConfig, PreferenceLossConfig):
    def validate(self) -> None:
        SamplingConfig.validate(self)
        PreferenceLossConfig.validate(self)


class OnlinePreferenceAlgorithm(SamplingAlgorithm):
    """Learns from pairs it samples and the judge (the reward) decides: online DPO judges a prompt's best
    completion against its worst; self-play judges the policy's completions against an opponent's."""

    Config: ClassVar[type[OnlinePreferenceConfig]]

    def loss(self, chosen: torch.Tensor, rejected: torch.Tensor) -> torch.Tensor:
        return preference_loss(chosen, rejected, self.cfg)


class SelfPlayAlgorithm(OnlinePreferenceAlgorithm):
    """Plays a pool of frozen earlier checkpoints of itself (its config has `pool_every` and `pool_size`): an
    opponent drawn each step from the step's seed, the policy's completions judged against the opponent's."""
