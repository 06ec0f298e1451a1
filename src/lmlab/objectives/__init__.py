"""Pretraining objectives, one module each: `lmlab.objectives.<name>` defines `OBJECTIVE`, an Objective class.

Adding an objective is adding a module here and a YAML in conf/objective/; nothing else changes.
"""

from __future__ import annotations

from typing import Any

from lmlab.data.tokenizer import TrainedTokenizer
from lmlab.objectives.base import Objective, ObjectiveOutput
from lmlab.plugins import Plugins

__all__ = [
    "Objective",
    "ObjectiveOutput",
    "available_objectives",
    "build_objective",
    "objective_class",
    "objective_traits",
]

_PLUGINS: Plugins[Objective] = Plugins(__name__, "OBJECTIVE", setting="objective.name", what="an objective")


def available_objectives() -> list[str]:
    return _PLUGINS.available()


def objective_class(name: str) -> type[Objective]:
    return _PLUGINS.get(name)


def objective_traits(name: str) -> type[Objective]:
    """What an exported run's objective says about reading and exporting it (`mode_token`, `hf_head`). A
    meta-learning export of class episodes records its algorithm as its objective: it has no objective's traits but
    the base class's."""
    return objective_class(name) if name in available_objectives() else Objective


def build_objective(cfg: Any, tokenizer: TrainedTokenizer) -> Objective:
    """Build the objective named by `cfg.name`, validating `cfg` against that objective's schema."""
    cls = objective_class(cfg["name"])
    return cls(cls.parse_config(cfg), tokenizer)
