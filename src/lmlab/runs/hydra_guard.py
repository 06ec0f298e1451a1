"""Checks on every config Hydra composes for an lmlab entry point, run before Hydra acts on it.

Hydra instantiates `hydra.callbacks.*._target_`, configures logging from `hydra.job_logging` (whose `()` keys name
any factory) and creates the job's output directory, all before the task function runs. An override or a preset
could open and truncate any file that way, and a bad value would be refused only after a directory was written. So
the composed config (task and `hydra` nodes) is checked right after composition:

- `_target_` only under allowed packages in the task config, and under `hydra` only where Hydra accepts nothing but
  its own registered plugins (`hydra.launcher`, `hydra.sweeper`);
- logging configs use only `logging` classes, no `()` factories, files opened for appending only;
- no password written into a URI (it would land in shell history, Hydra's saved overrides and process listings);
- the task config parses under its schema (`lmlab.config_schema.parse`): unknown keys, types, values.

Hydra has no public hook after composition, so this wraps `ConfigLoaderImpl.load_configuration`, which both a run's
and every sweep job's composition go through. This module is the only place lmlab touches Hydra internals;
tests/test_hydra_guard.py fails loudly if an upgrade moves them.
"""

from __future__ import annotations

import copy
import functools
import re
import sys
from collections.abc import Mapping
from typing import Any

from hydra._internal.config_loader_impl import ConfigLoaderImpl
from hydra.core.hydra_config import HydraConfig
from hydra.errors import CompactHydraException
from omegaconf import DictConfig, OmegaConf, open_dict, read_write

from lmlab.config_schema import parse
from lmlab.errors import InputError
from lmlab.runs.targets import check_targets

# Hydra checks that these nodes' `_target_` is a registered Hydra plugin before instantiating it.
PLUGIN_NODES = ("hydra.launcher", "hydra.sweeper")
_LOGGING_NODES = ("hydra.job_logging", "hydra.hydra_logging")
_URI_WITH_PASSWORD = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^/\s:@]+:[^/\s@]+@")

# Hydra's flags that display the composed config or help and exit without running the task.
_DISPLAY_FLAGS = ("--help", "-h", "--hydra-help", "--cfg", "-c", "--info", "-i", "--shell-completion", "-sc")

_schemas: dict[str, type] = {}


class ConfigRefused(CompactHydraException, InputError):
    """Printed by Hydra as its message alone (HYDRA_FULL_ERROR=1 shows the traceback)."""


def guard_compositions(config_name: str, schema: type) -> None:
    """Check every composition of `config_name` (a primary config of conf/) with `check_composed`."""
    _schemas[config_name] = schema
    if getattr(ConfigLoaderImpl.load_configuration, "lmlab_guarded", False):
        return
    original = ConfigLoaderImpl.load_configuration

    @functools.wraps(original)
    def load_configuration(self: ConfigLoaderImpl, config_name: str | None, *args: Any, **kwargs: Any) -> DictConfig:
        cfg = original(self, config_name, *args, **kwargs)
        if config_name in _schemas:
            try:
                check_composed(cfg, _schemas[config_name], complete=not displaying_only(sys.argv[1:]))
            except InputError as err:
                raise ConfigRefused(str(err)) from err
        return cfg

    load_configuration.lmlab_guarded = True  # type: ignore[attr-defined]
    ConfigLoaderImpl.load_configuration = load_configuration  # type: ignore[method-assign]


def displaying_only(argv: list[str]) -> bool:
    """Whether Hydra was asked only to show something (`--help`, `--cfg job`, ...), not to run a job: a config
    shown before its required values (`run=???`) are given is not refused."""
    return any(arg == flag or arg.startswith(f"{flag}=") for arg in argv for flag in _DISPLAY_FLAGS)


def check_composed(cfg: DictConfig, schema: type, complete: bool = True) -> None:
    """Refuse (InputError) a composed config, `hydra` node included, that lmlab would not use as written; with
    `complete=False` (a config only displayed) the settings themselves are not parsed."""
    tree = OmegaConf.to_container(cfg, resolve=False)
    assert isinstance(tree, dict), tree
    hydra_tree = tree.pop("hydra", None) or {}
    check_targets(tree)
    check_hydra_node(hydra_tree)
    check_no_passwords(tree)
    check_no_passwords(hydra_tree.get("overrides", {}), "hydra.overrides")
    task = cfg
    if "hydra" in cfg:
        # What Hydra does before a job, so `${hydra:...}` values resolve; on a copy (it makes the hydra node read-only)
        HydraConfig.instance().set_config(copy.deepcopy(cfg))
        task = copy.deepcopy(cfg)
        with read_write(task), open_dict(task):
            del task["hydra"]
    if complete:
        parse(task, schema)


def check_hydra_node(tree: Mapping[str, Any]) -> None:
    """`_target_` only on Hydra's plugin nodes; logging only through `logging` classes, appending to files."""
    for path, key, value in _items(tree, "hydra"):
        if key == "_target_" and path not in PLUGIN_NODES:
            raise InputError(
                f"{path}._target_={value!r} is not allowed: Hydra would instantiate it before lmlab starts. lmlab "
                f"accepts `_target_` under hydra only as the launcher or sweeper plugin ({list(PLUGIN_NODES)})"
            )
        if path.startswith(_LOGGING_NODES):
            if key == "()":
                raise InputError(f"{path}.()={value!r} is not allowed: logging configs may not name factories")
            if key == "class" and not str(value).startswith("logging."):
                raise InputError(f"{path}.class={value!r} is not allowed: logging configs may use `logging.*` only")
            if key == "mode" and value != "a":
                raise InputError(f"{path}.mode={value!r} is not allowed: log files are only appended to (mode 'a')")


def check_no_passwords(tree: Any, path: str = "") -> None:
    """Refuse a URI that holds a password: the config and the command line are no place for one."""
    for where, key, value in _items(tree, path):
        if isinstance(value, str) and _URI_WITH_PASSWORD.search(value) and "${" not in value:
            name = f"{where}{key}" if key.startswith("[") else f"{where}.{key}" if where else key
            raise InputError(
                f"{name} holds a URI with a password; lmlab does not take credentials in configs or on the command "
                "line (they would stay in shell history, Hydra's saved overrides and process listings). Give the URI "
                "without it and put the password in MLFLOW_TRACKING_PASSWORD (with MLFLOW_TRACKING_USERNAME) for an "
                "http(s) tracking server, or in a pgpass file (PGPASSFILE) for a database URI; or set "
                "MLFLOW_TRACKING_URI in the environment and use logger=server."
            )


def _items(tree: Any, path: str) -> list[tuple[str, str, Any]]:
    """(path of the mapping, key, value) of every key in a nested container; list items are `path[i]`."""
    found = []
    if isinstance(tree, Mapping):
        for key, value in tree.items():
            found.append((path, str(key), value))
            found.extend(_items(value, f"{path}.{key}" if path else str(key)))
    elif isinstance(tree, list):
        for i, value in enumerate(tree):
            found.append((path, f"[{i}]", value))
            found.extend(_items(value, f"{path}[{i}]"))
    return found
