"""Downstream task families, one module each: `lmlab.tasks.<family>` defines `FAMILY`, a TaskFamily class with its
own config (`FAMILY.Config`), readers, head, loss and metrics.

Adding a family is adding a module here and its YAMLs in conf/task/; nothing else changes.
"""

from __future__ import annotations

import importlib
import pkgutil

from lmlab.errors import InputError
from lmlab.tasks.base import TaskConfig, TaskFamily, TaskOutput

__all__ = ["TaskConfig", "TaskFamily", "TaskOutput", "available_families", "family_class"]

_NOT_FAMILIES = {"base", "entities", "examples", "readers", "sources", "squad_metric", "text_metrics"}


def available_families() -> list[str]:
    return sorted(m.name for m in pkgutil.iter_modules(__path__) if m.name not in _NOT_FAMILIES)


def family_class(name: str) -> type[TaskFamily]:
    if name not in available_families():
        raise InputError(f"task.family={name!r} is not a task family; available: {available_families()}")
    return importlib.import_module(f"{__name__}.{name}").FAMILY
