"""Checks on every config Hydra composes for an lmlab entry point, run before Hydra acts on it.

Hydra instantiates `hydra.callbacks.*._target_`, configures logging from `hydra.job_logging` (whose `()` keys name
any factory) and creates the job's output directory, all before the task function runs. An override or a preset
could open and truncate any file that way, and a bad value would be refused only after a directory was written. So
the composed config (task and `hydra` nodes) is checked right after composition:

- no `_target_` in the task config (lmlab instantiates nothing from it), and under `hydra` only where Hydra accepts
  nothing but its own registered plugins (`hydra.launcher`, `hydra.sweeper`);
- logging configs use only the handler, formatter and filter classes of `logging` itself (the name resolved to the
  object, so `logging.os.open` is `os.open`), no `()` factories, no `ext://` object but sys.stdout and sys.stderr,
  and log files inside the job's output directory, opened for appending;
- `hydra.job.env_set` sets only the variables a config may set (`lmlab.child_env.CONFIG_SETTABLE`);
- no password written into a URI (it would land in shell history, Hydra's saved overrides and process listings);
- the task config parses under its schema (`lmlab.config_schema.parse`): unknown keys, types, values.

Hydra has no public hook after composition, so this wraps `ConfigLoaderImpl.load_configuration`, which both a run's
and every sweep job's composition go through. This module is the only place lmlab touches Hydra internals;
tests/test_hydra_guard.py fails loudly if an upgrade moves them.
"""

from __future__ import annotations

import copy
import functools
import logging
import re
import sys
from collections.abc import Mapping
from pathlib import PurePosixPath
from typing import Any

from hydra._internal.config_loader_impl import ConfigLoaderImpl
from hydra.core.hydra_config import HydraConfig
from hydra.errors import CompactHydraException
from omegaconf import DictConfig, OmegaConf, open_dict, read_write

from lmlab.child_env import CONFIG_SETTABLE, settable_by_config
from lmlab.config_schema import parse
from lmlab.errors import InputError
from lmlab.runs.targets import check_targets

# Hydra checks that these nodes' `_target_` is a registered Hydra plugin before instantiating it.
PLUGIN_NODES = ("hydra.launcher", "hydra.sweeper")
_LOGGING_NODES = ("hydra.job_logging", "hydra.hydra_logging")
# The objects a logging config may name, by the section that names them.
_LOGGING_CLASSES: dict[str, tuple[type, ...]] = {
    "handlers": (logging.StreamHandler, logging.FileHandler, logging.NullHandler),
    "formatters": (logging.Formatter,),
    "filters": (logging.Filter,),
}
_STREAMS = ("ext://sys.stdout", "ext://sys.stderr")
# A log file's name: under the job's output directory, where Hydra's own default puts it.
_IN_RUN_DIR = re.compile(r"^\$\{hydra[.:]runtime\.output_dir\}/(?P<rest>.+)$")
_JOB_NAME = re.compile(r"\$\{hydra[.:]job\.name\}")
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
    """`_target_` only on Hydra's plugin nodes; logging only through `logging`'s own classes into the job's
    directory; environment variables only those a config may set."""
    for path, key, value in _items(tree, "hydra"):
        if key == "_target_" and path not in PLUGIN_NODES:
            raise InputError(
                f"{path}._target_={value!r} is not allowed: Hydra would instantiate it before lmlab starts. lmlab "
                f"accepts `_target_` under hydra only as the launcher or sweeper plugin ({list(PLUGIN_NODES)})"
            )
        if path.startswith(_LOGGING_NODES):
            _check_logging_item(path, key, value)
    env_set = (tree.get("job") or {}).get("env_set") or {}
    for name in env_set:
        if not settable_by_config(str(name)):
            raise InputError(
                f"hydra.job.env_set.{name} is not allowed: a config may set only the variables that tune libraries "
                f"({', '.join(n + '*' if n.endswith('_') else n for n in CONFIG_SETTABLE)}); set {name} in the "
                "shell that starts lmlab instead"
            )


def _check_logging_item(path: str, key: str, value: Any) -> None:
    where = f"{path}.{key}"
    if key in ("()", "."):  # a factory, or attributes set on the built object (a handler's file name, say)
        raise InputError(f"{where}={value!r} is not allowed: logging configs may not name factories or set attributes")
    if key == "class":
        section = path.split(".")[2] if path.count(".") >= 3 else ""
        allowed = _LOGGING_CLASSES.get(section, ())
        if resolve_loaded(str(value)) not in allowed:
            names = [f"{c.__module__}.{c.__qualname__}" for c in allowed] or ["none here"]
            raise InputError(f"{where}={value!r} is not allowed: a logging config's {section or path} may use {names}")
    if isinstance(value, str) and value.startswith(("ext://", "cfg://")) and value not in _STREAMS:
        raise InputError(f"{where}={value!r} is not allowed: a logging config may refer to {list(_STREAMS)} only")
    if key == "mode" and value != "a":
        raise InputError(f"{where}={value!r} is not allowed: log files are only appended to (mode 'a')")
    if key == "filename" and not _inside_run_dir(str(value)):
        raise InputError(
            f"{where}={value!r} is not allowed: log files are written inside the job's output directory, "
            "as ${hydra.runtime.output_dir}/<name>.log"
        )


def _inside_run_dir(filename: str) -> bool:
    match = _IN_RUN_DIR.match(filename)
    if match is None:
        return False
    rest = _JOB_NAME.sub("job", match["rest"])
    return "${" not in rest and ".." not in PurePosixPath(rest).parts and not rest.startswith("/")


def resolve_loaded(name: str) -> Any:
    """The object a dotted name resolves to as `logging.config` would resolve it (attributes of modules, then
    submodules), from modules already imported only: resolving a name never imports (runs) anything. None when it
    resolves to nothing loaded."""
    first, *rest = name.split(".")
    obj = sys.modules.get(first)
    for i, part in enumerate(rest, start=2):
        if obj is None:
            return None
        obj = getattr(obj, part, None) or sys.modules.get(".".join(name.split(".")[:i]))
    return obj


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
