"""lmlab builds every object from typed config fields and never instantiates a run config by name, so a `_target_`
anywhere in a composed run config (e.g. `+model._target_=os.system`, or one that names an allowed-looking package)
is refused: there is nothing it could legitimately name."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from lmlab.errors import InputError


def check_targets(tree: Any, path: str = "") -> None:
    """Raise InputError naming the first `_target_` in a config."""
    if isinstance(tree, Mapping):
        for key, value in tree.items():
            where = f"{path}.{key}" if path else str(key)
            if key == "_target_":
                raise InputError(
                    f"{where}={value!r} is not allowed: lmlab instantiates nothing from a run config (every object "
                    "is built from its typed settings); drop the key"
                )
            check_targets(value, where)
    elif isinstance(tree, list):
        for i, value in enumerate(tree):
            check_targets(value, f"{path}[{i}]")
