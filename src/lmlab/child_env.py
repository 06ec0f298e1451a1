"""The environment lmlab's own subprocesses (git, a study's jobs) run with, and which variables a config may set.

A config can set environment variables for its job (`hydra.job.env_set`), and a preset can come from any search
path: `GIT_CONFIG_*` would make lmlab's `git` call run a command, `PYTHONPATH` or `LD_PRELOAD` would load code into
every job a study starts. So a config may set only the variables that tune libraries (`CONFIG_SETTABLE`), and lmlab's
subprocesses run without the variables that make a program load or run something else (`_UNSAFE`)."""

from __future__ import annotations

import os
from collections.abc import Mapping

# Variables (exact names, or prefixes ending in `_`) a config may set for its job: threads, devices, collectives,
# caches of the libraries lmlab uses.
CONFIG_SETTABLE = (
    "OMP_NUM_THREADS",
    "MKL_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "TOKENIZERS_PARALLELISM",
    "CUDA_",
    "NCCL_",
    "GLOO_",
    "TORCH_",
    "PYTORCH_",
    "HF_",
)
# Variables that make git, Python, the dynamic loader or a shell load or run something: never passed on.
_UNSAFE = ("GIT_", "PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP", "PYTHONUSERBASE", "LD_PRELOAD", "LD_AUDIT", "BASH_ENV")


def settable_by_config(name: str) -> bool:
    return any(name == allowed or (allowed.endswith("_") and name.startswith(allowed)) for allowed in CONFIG_SETTABLE)


def child_environment(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """`environ` (default: this process's) without the variables that make a child load or run other code."""
    environ = os.environ if environ is None else environ
    return {k: v for k, v in environ.items() if not (k.startswith(_UNSAFE) or k in ("ENV",))}
