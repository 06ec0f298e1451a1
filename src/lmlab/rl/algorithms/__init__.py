"""RL algorithms, one module each (the kinds are in `base`): reward algorithms say how a group's rewards become
advantages; preference algorithms learn from pairs, from a file or judged online."""

from __future__ import annotations

from lmlab.plugins import Plugins
from lmlab.rl.algorithms.base import (
    OnlinePreferenceAlgorithm,
    PreferenceAlgorithm,
    RewardAlgorithm,
    RLAlgorithm,
    SamplingAlgorithm,
    SelfPlayAlgorithm,
)

__all__ = [
    "OnlinePreferenceAlgorithm",
    "PreferenceAlgorithm",
    "RLAlgorithm",
    "RewardAlgorithm",
    "SamplingAlgorithm",
    "SelfPlayAlgorithm",
    "algorithm_class",
    "available_algorithms",
]

_PLUGINS: Plugins[RLAlgorithm] = Plugins(__name__, "ALGORITHM", setting="rl.name", what="an RL algorithm")


def available_algorithms() -> list[str]:
    return _PLUGINS.available()


def algorithm_class(name: str) -> type[RLAlgorithm]:
    return _PLUGINS.get(name)
