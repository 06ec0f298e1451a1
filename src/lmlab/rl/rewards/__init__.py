"""Rewards (the `reward` config group), one module each: a score in [0, 1] per completion of a prompt."""

from __future__ import annotations

from lmlab.plugins import Plugins
from lmlab.rl.rewards.base import Reward, RewardContext

__all__ = ["Reward", "RewardContext", "available_rewards", "reward_class"]

_PLUGINS: Plugins[Reward] = Plugins(__name__, "REWARD", setting="reward.name", what="a reward")


def available_rewards() -> list[str]:
    return _PLUGINS.available()


def reward_class(name: str) -> type[Reward]:
    return _PLUGINS.get(name)
