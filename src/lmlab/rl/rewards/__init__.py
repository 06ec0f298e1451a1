"""Rewards (the `reward` config group), one module each: a score in [0, 1] per completion of a prompt."""

from __future__ import annotations

import importlib
import pkgutil

from lmlab.errors import InputError
from lmlab.rl.rewards.base import Reward, RewardContext

__all__ = ["Reward", "RewardContext", "available_rewards", "reward_class"]

_NOT_REWARDS = {"base"}


def available_rewards() -> list[str]:
    return sorted(m.name for m in pkgutil.iter_modules(__path__) if m.name not in _NOT_REWARDS)


def reward_class(name: str) -> type[Reward]:
    if name not in available_rewards():
        raise InputError(f"reward.name={name!r} is not a reward; available: {available_rewards()}")
    return importlib.import_module(f"{__name__}.{name}").REWARD
