"""Downstream task families, one module each: `lmlab.tasks.<family>` defines `FAMILY`, a TaskFamily class with its
own config (`FAMILY.Config`), readers, head, loss and metrics.

Adding a family is adding a module here and its YAMLs in conf/task/; nothing else changes.
"""

from __future__ import annotations

from lmlab.plugins import Plugins
from lmlab.tasks.base import TaskConfig, TaskFamily, TaskOutput

__all__ = ["TaskConfig", "TaskFamily", "TaskOutput", "available_families", "family_class"]

_PLUGINS: Plugins[TaskFamily] = Plugins(__name__, "FAMILY", setting="task.family", what="a task family")


def available_families() -> list[str]:
    return _PLUGINS.available()


def family_class(name: str) -> type[TaskFamily]:
    return _PLUGINS.get(name)
