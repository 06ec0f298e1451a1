"""Meta-learning algorithms, one module each (like objectives): `meta.name` picks the module."""

from __future__ import annotations

from lmlab.meta.algorithms.base import MetaAlgorithm
from lmlab.plugins import Plugins

_PLUGINS: Plugins[MetaAlgorithm] = Plugins(__name__, "ALGORITHM", setting="meta.name", what="a meta-learning algorithm")


def available_algorithms() -> list[str]:
    return _PLUGINS.available()


def algorithm_class(name: str) -> type[MetaAlgorithm]:
    return _PLUGINS.get(name)
