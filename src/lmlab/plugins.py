"""Plugin discovery, written once: a plugin is a module of a package that names its class at top level
(`OBJECTIVE = MaskedLM`, `FAMILY = ...`, `ALGORITHM = ...`, `REWARD = ...`). The package's other modules (its base
class, helpers) are not plugins because they name none, so no list of exceptions is kept by hand. Discovery reads
the modules' source, not the modules: listing the choices imports nothing."""

from __future__ import annotations

import importlib
import importlib.util
import pkgutil
import re
from functools import cache
from pathlib import Path
from typing import Generic, TypeVar

from lmlab.errors import InputError

T = TypeVar("T")


class Plugins(Generic[T]):
    """The plugins of `package` that bind `attribute`; `setting` names the config key that picks one (for errors)."""

    def __init__(self, package: str, attribute: str, *, setting: str, what: str) -> None:
        self.package, self.attribute, self.setting, self.what = package, attribute, setting, what

    def available(self) -> list[str]:
        return list(_plugin_modules(self.package, self.attribute))

    def get(self, name: str) -> type[T]:
        """The class of the plugin `name`; InputError naming the choices when there is none."""
        if name not in self.available():
            raise InputError(f"{self.setting}={name!r} is not {self.what}; available: {self.available()}")
        plugin: type[T] = getattr(importlib.import_module(f"{self.package}.{name}"), self.attribute)
        return plugin


@cache
def _plugin_modules(package: str, attribute: str) -> tuple[str, ...]:
    spec = importlib.util.find_spec(package)
    assert spec is not None and spec.submodule_search_locations is not None, package
    binds = re.compile(rf"^{attribute}\s*=", re.MULTILINE)
    found = []
    for module in pkgutil.iter_modules(spec.submodule_search_locations):
        path = Path(next(iter(spec.submodule_search_locations))) / f"{module.name}.py"
        if not module.ispkg and path.is_file() and binds.search(path.read_text()):
            found.append(module.name)
    return tuple(sorted(found))
