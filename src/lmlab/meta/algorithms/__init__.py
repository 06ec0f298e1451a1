"""Meta-learning algorithms, one module each (like objectives): `meta.name` picks the module."""

from __future__ import annotations

import importlib
import pkgutil

from lmlab.errors import InputError
from lmlab.meta.algorithms.base import MetaAlgorithm

_NOT_ALGORITHMS = {"base"}


def available_algorithms() -> list[str]:
    return sorted(m.name for m in pkgutil.iter_modules(__path__) if m.name not in _NOT_ALGORITHMS)


def algorithm_class(name: str) -> type[MetaAlgorithm]:
    if name not in available_algorithms():
        raise InputError(f"meta.name={name!r} is not a meta-learning algorithm; available: {available_algorithms()}")
    return importlib.import_module(f"{__name__}.{name}").ALGORITHM
