"""Pretraining objectives, one module each: `lmlab.objectives.<name>` defines `OBJECTIVE`, an Objective class.

Adding an objective is adding a module here and a YAML in conf/objective/; nothing else changes.
"""

from __future__ import annotations

import importlib
import pkgutil
from typing import Any

from lmlab.data.tokenizer import TrainedTokenizer
from lmlab.errors import InputError
from lmlab.objectives.base import Objective, ObjectiveOutput

__all__ = ["Objective", "ObjectiveOutput", "available_objectives", "build_objective", "objective_class"]

_NOT_OBJECTIVES = {"base", "heldout", "seq2seq", "sentence_pairs"}


def available_objectives() -> list[str]:
    return sorted(m.name for m in pkgutil.iter_modules(__path__) if m.name not in _NOT_OBJECTIVES)


def objective_class(name: str) -> type[Objective]:
    if name not in available_objectives():
        raise InputError(f"objective.name={name!r} is not an objective; available: {available_objectives()}")
    return importlib.import_module(f"{__name__}.{name}").OBJECTIVE


def build_objective(cfg: Any, tokenizer: TrainedTokenizer) -> Objective:
    """Build the objective named by `cfg.name`, validating `cfg` against that objective's schema."""
    cls = objective_class(cfg["name"])
    return cls(cls.parse_config(cfg), tokenizer)
