"""lmlab builds every object from typed config fields and never instantiates by name; a `_target_` anywhere in a
composed run config (e.g. `+model._target_=os.system`) is refused unless it names an allowed package."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from lmlab.errors import InputError

ALLOWED_TARGET_PACKAGES = ("lmlab.", "torch.", "pytorch_lightning.", "torchmetrics.")


def check_targets(tree: Any, path: str = "") -> None:
    """Raise ValueError naming the first `_target_` outside ALLOWED_TARGET_PACKAGES in a resolved config."""
    if isinstance(tree, Mapping):
        for key, value in tree.items():
            where = f"{path}.{key}" if path else str(key)
            if key == "_target_" and not str(value).startswith(ALLOWED_TARGET_PACKAGES):
                raise InputError(
                    f"{where}={value!r} is not allowed: config targets must be in {list(ALLOWED_TARGET_PACKAGES)}"
                )
            check_targets(value, where)
    elif isinstance(tree, list):
        for i, value in enumerate(tree):
            check_targets(value, f"{path}[{i}]")
