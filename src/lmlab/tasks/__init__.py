"""Downstream task families, one module each: `lmlab.tasks.<family>` defines `FAMILY`, a TaskFamily class."""

from __future__ import annotations

import importlib

from lmlab.errors import InputError
from lmlab.tasks.base import TaskFamily, TaskOutput

__all__ = ["FAMILIES", "TaskFamily", "TaskOutput", "family_class"]

FAMILIES = ("classification", "token_classification", "extractive_qa", "seq2seq")


def family_class(name: str) -> type[TaskFamily]:
    if name not in FAMILIES:
        raise InputError(f"task.family={name!r} is not a task family; available: {list(FAMILIES)}")
    return importlib.import_module(f"{__name__}.{name}").FAMILY
