"""RL algorithms, one module each (the kinds are in `base`): reward algorithms say how a group's rewards become
advantages; preference algorithms learn from pairs, from a file or judged online."""

from __future__ import annotations

import importlib
import pkgutil

from lmlab.errors import InputError
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

_NOT_ALGORITHMS = {"base"}


def available_algorithms() -> list[str]:
    return sorted(m.name for m in pkgutil.iter_modules(__path__) if m.name not in _NOT_ALGORITHMS)


def algorithm_class(name: str) -> type[RLAlgorithm]:
    if name not in available_algorithms():
        raise InputError(f"rl.name={name!r} is not an RL algorithm; available: {available_algorithms()}")
    return importlib.import_module(f"{__name__}.{name}").ALGORITHM
