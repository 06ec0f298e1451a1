"""What every `@hydra.main` entry point does around its task: one owner per job directory, a refusal printed as
its message alone, and no directory left behind by a command that was refused."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from hydra.core.hydra_config import HydraConfig
from lightning_fabric.utilities.rank_zero import rank_zero_only
from omegaconf import DictConfig, OmegaConf

from lmlab.errors import InputError
from lmlab.runs.console import quiet_libraries
from lmlab.runs.hydra_guard import ConfigRefused, check_hydra_node, check_no_passwords
from lmlab.runs.job_lock import LOCK_FILE, job_lock
from lmlab.tracking.mlflow_run import TrackingUnavailable

R = TypeVar("R")
# What Hydra writes into a job directory before the task runs.
_HYDRA_FILES = (".hydra", LOCK_FILE)


def run_job(cfg: DictConfig, task: Callable[[DictConfig, Path], R], owns_run_dir: bool = True) -> R:
    """Run `task(cfg, run_dir)` in the current Hydra job. With `owns_run_dir` (a job directory of its own, not the
    working directory) the job holds the directory's lock, and a refused job removes the directory when the refusal
    left nothing in it but what Hydra wrote."""
    quiet_libraries()
    hc = HydraConfig.get()
    run_dir = Path(hc.runtime.output_dir)
    try:
        check_hydra_node(_hydra_tree(hc))  # sweep jobs composed in another process come here unchecked
        check_no_passwords(list(hc.overrides.task), "hydra.overrides.task")
        if not owns_run_dir or not lead_process():  # DDP ranks > 0 are processes of the same job
            return task(cfg, run_dir)
        with job_lock(run_dir):
            log_file = run_dir / f"{hc.job.name}.log"
            fresh = _holds_only_hydra_files(run_dir, log_file)
            try:
                return task(cfg, run_dir)
            except (InputError, TrackingUnavailable):
                if fresh and _holds_only_hydra_files(run_dir, log_file, log_may_grow=True):
                    _remove(run_dir, Path(str(cfg.paths.output_dir)))
                raise
    except (InputError, TrackingUnavailable) as err:
        raise ConfigRefused(str(err)) from err


def lead_process() -> bool:
    """Whether this process is rank 0 of its job (the one that records, tracks and exports), as Lightning sets it
    from the launcher's environment."""
    return getattr(rank_zero_only, "rank", 0) == 0


def _hydra_tree(hc: Any) -> dict:
    tree = OmegaConf.to_container(hc, resolve=False)
    assert isinstance(tree, dict), tree
    return tree


def _holds_only_hydra_files(run_dir: Path, log_file: Path, log_may_grow: bool = False) -> bool:
    """Whether `run_dir` holds nothing but what Hydra wrote for this job (and, before the task, an empty log) and
    empty directories."""
    for entry in run_dir.iterdir() if run_dir.is_dir() else ():
        if entry.name in _HYDRA_FILES or (entry == log_file and (log_may_grow or entry.stat().st_size == 0)):
            continue
        if entry.is_dir() and not any(entry.iterdir()):  # e.g. the checkpoint dir, created to check it is writable
            continue
        return False
    return True


def _remove(run_dir: Path, output_root: Path) -> None:
    """Remove a refused job's directory, then its parents up to the outputs root while they are empty."""
    shutil.rmtree(run_dir, ignore_errors=True)
    root = output_root.resolve()
    parent = run_dir.parent.resolve()
    while parent != root and root in parent.parents and not any(parent.iterdir()):
        parent.rmdir()
        parent = parent.parent
