"""What identifies a run: its flattened config, code version, command line, overrides and sweep."""

from __future__ import annotations

import hashlib
import os
import re
import shlex
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode

from lmlab.child_env import child_environment

_URI_PASSWORD = re.compile(r"(?<=://)([^/\s:@]+):[^/\s@]+@")


def redact(text: str) -> str:
    """A URI's password becomes ***: `postgresql://user:secret@host/db` -> `postgresql://user:***@host/db`."""
    return _URI_PASSWORD.sub(r"\1:***@", text)


def redacted(tree: Any) -> Any:
    """A resolved config with every string redacted: what params, run_config.json and exported configs may hold."""
    if isinstance(tree, Mapping):
        return {k: redacted(v) for k, v in tree.items()}
    if isinstance(tree, list):
        return [redacted(v) for v in tree]
    return redact(tree) if isinstance(tree, str) else tree


def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """Nested mappings -> {"a.b.c": "value"}; lists stay one value."""
    flat: dict[str, str] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = str(value)
    return flat


def git_state(root: Path) -> tuple[str, bool]:
    """(commit, dirty) of the repository at `root`; ("unknown", False) outside a git checkout. git runs without
    the GIT_* variables a job's environment may carry (they can name commands for git to run)."""
    env = child_environment()
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, check=True, timeout=10, env=env
        ).stdout.strip()
        status = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=root,
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
            env=env,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return "unknown", False
    return commit, bool(status.strip())


def hydra_job() -> dict[str, str]:
    """Overrides and sweep identity of the current Hydra job (empty outside Hydra).

    All jobs of one multirun share `sweep`: a hash of the sweep directory and the multirun.yaml the
    launcher wrote there before starting them, so a sweep is one group in the MLflow UI.
    """
    if not HydraConfig.initialized():
        return {}
    hc = HydraConfig.get()
    info = {"overrides": " ".join(hc.overrides.task), "job_name": hc.job.name}
    if hc.mode == RunMode.MULTIRUN:
        sweep_dir = Path(hc.sweep.dir)
        manifest = sweep_dir / "multirun.yaml"
        content = manifest.read_bytes() if manifest.is_file() else b""
        info["sweep"] = hashlib.sha256(str(sweep_dir.resolve()).encode() + content).hexdigest()[:12]
        info["sweep_overrides"] = redact(" ".join(_sweep_overrides(manifest)))
        info["job_num"] = str(hc.job.num)
    return info


def _sweep_overrides(manifest: Path) -> list[str]:
    if not manifest.is_file():
        return []
    from omegaconf import OmegaConf

    return list(OmegaConf.load(manifest).hydra.overrides.task)


def command_line() -> str:
    """The command that reruns this job alone. A sweep job (possibly started by a launcher process such as
    submitit's, whose argv says nothing about the job) gets its entry point and its own overrides."""
    if HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN:
        hc = HydraConfig.get()
        return " ".join([f"{hc.job.name}.py", *(shlex.quote(o) for o in hc.overrides.task)])
    return " ".join([Path(sys.argv[0]).name, *sys.argv[1:]])


def job_tags(root: Path, run_dir: Path) -> dict[str, str]:
    """The tags every run carries: code version, command line, overrides, run dir, and sweep membership."""
    commit, dirty = git_state(root)
    job = hydra_job()
    return {
        "mlflow.source.git.commit": commit,
        "lmlab.git_commit": commit,
        "lmlab.git_dirty": str(dirty).lower(),
        "lmlab.command": redact(command_line()),
        "lmlab.overrides": redact(job.get("overrides", "")),
        "lmlab.run_dir": str(run_dir),
        **{f"lmlab.{k}": v for k, v in job.items() if k.startswith("sweep") or k == "job_num"},
        **slurm_tags(),
    }


def slurm_tags() -> dict[str, str]:
    """The Slurm job a run was started in (a requeued job keeps its id); empty outside Slurm."""
    job = os.environ.get("SLURM_ARRAY_JOB_ID") and "{}_{}".format(
        os.environ["SLURM_ARRAY_JOB_ID"], os.environ.get("SLURM_ARRAY_TASK_ID", "")
    )
    job = job or os.environ.get("SLURM_JOB_ID")
    return {"lmlab.slurm_job_id": job, "lmlab.slurm_cluster": os.environ.get("SLURM_CLUSTER_NAME", "")} if job else {}
