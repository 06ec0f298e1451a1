"""Sweeps through `hydra/launcher=slurm` on the real local cluster (`scripts/slurm_cluster.sh start`).

CI starts the cluster and sets LMLAB_REQUIRE_SERVICES=1, so a cluster that is not up fails these tests there instead of
skipping them."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from mlflow.entities import Run
from mlflow.tracking import MlflowClient

from lmlab.training.exported import load_export

from .conftest import ROOT, TINY, run_env


def _cluster_up() -> bool:
    if shutil.which("sinfo") is None:
        return False
    state = subprocess.run(["sinfo", "-h", "-o", "%t"], capture_output=True, text=True).stdout
    return any(s.startswith(("idle", "mix", "alloc")) for s in state.split())


if not _cluster_up():
    if os.environ.get("LMLAB_REQUIRE_SERVICES") == "1":
        raise RuntimeError("LMLAB_REQUIRE_SERVICES=1 but no Slurm cluster is up: run scripts/slurm_cluster.sh start")
    pytest.skip("no Slurm cluster is up (scripts/slurm_cluster.sh start)", allow_module_level=True)

pytestmark = pytest.mark.slow

# One CPU and one torch thread per job, so two jobs share this 2-core node without thrashing.
SLURM = ["hydra/launcher=slurm", "hydra.launcher.cpus_per_task=1"]


def _env(root: Path) -> dict[str, str]:
    return {**run_env(root), "OMP_NUM_THREADS": "1"}


def _runs(root: Path) -> list[Run]:
    client = MlflowClient(f"sqlite:///{root}/mlflow.db")
    experiment = client.get_experiment_by_name("lmlab")
    return [] if experiment is None else client.search_runs([experiment.experiment_id])


def _wait_for(what: str, check: Callable[[], object], sweep: subprocess.Popen, timeout: float) -> object:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if (found := check()) is not None:
            return found
        if sweep.poll() is not None:
            raise AssertionError(f"the sweep ended before {what}: {sweep.stderr.read()[-3000:]}")
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}")


def _scontrol(*args: str) -> None:
    subprocess.run(["scontrol", *args], check=True, capture_output=True, text=True)


def test_a_two_job_sweep_runs_as_slurm_jobs_with_one_mlflow_run_each(tmp_path):
    cmd = [sys.executable, "train.py", "-m", "objective=mlm,clm", *SLURM, *TINY]
    done = subprocess.run(cmd, cwd=ROOT, env=_env(tmp_path), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    runs = _runs(tmp_path)
    assert sorted(r.data.tags["lmlab.objective"] for r in runs) == ["clm", "mlm"]
    assert all(r.info.status == "FINISHED" for r in runs)
    jobs = {r.data.tags["lmlab.slurm_job_id"] for r in runs}
    assert len(jobs) == 2 and all("_" in j for j in jobs), jobs  # one array task per sweep point
    run_dirs = {r.data.tags["lmlab.run_dir"] for r in runs}
    assert len(run_dirs) == 2
    for run in runs:
        assert load_export(run.data.tags["lmlab.run_dir"]).global_step == 20
        assert run.data.tags["lmlab.command"].startswith("train.py ")  # reruns the job, not submitit's worker


def test_a_job_the_node_can_never_run_is_refused_at_submission_instead_of_pending_for_ever(tmp_path):
    cpus = int(subprocess.run(["sinfo", "-h", "-o", "%c"], capture_output=True, text=True).stdout.split()[0])
    cmd = [sys.executable, "train.py", "-m", "hydra/launcher=slurm", f"hydra.launcher.cpus_per_task={cpus + 1}", *TINY]
    done = subprocess.run(cmd, cwd=ROOT, env=_env(tmp_path), capture_output=True, text=True, timeout=120)
    assert done.returncode != 0
    assert "More processors requested than permitted" in done.stderr, done.stderr[-3000:]
    assert _runs(tmp_path) == []


def test_a_time_limited_then_preempted_job_resumes_into_the_same_run(tmp_path):
    """Allocation 1 hits its (real, 2-minute) time limit: Slurm sends USR2 30-90 s in, the run saves last.ckpt and
    submitit requeues the job. Allocation 2 is preempted with `scontrol requeue` (SIGTERM). Allocation 3 finishes.
    One MLflow run throughout, every step's loss logged once, the final step the uninterrupted run's."""
    steps = 3000
    overrides = [*TINY, f"trainer.max_steps={steps}", "trainer.val_check_interval=500", "trainer.log_every_n_steps=1"]
    cmd = [
        sys.executable,
        "train.py",
        "-m",
        *SLURM,
        "hydra.launcher.timeout_min=2",
        "hydra.launcher.signal_delay_s=30",
        *overrides,
    ]
    sweep = subprocess.Popen(
        cmd, cwd=ROOT, env=_env(tmp_path), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    try:

        def stopped_by(signal: str) -> Run | None:
            runs = _runs(tmp_path)
            if runs and runs[0].info.status == "KILLED" and runs[0].data.tags.get("lmlab.stopped_by") == signal:
                return runs[0]
            return None

        run = _wait_for("the time limit's USR2", lambda: stopped_by("SIGUSR2"), sweep, 240)
        run_id, job = run.info.run_id, run.data.tags["lmlab.slurm_job_id"]
        first_stop = int(run.data.tags["lmlab.stopped_at_step"])
        assert 0 < first_stop < steps
        _scontrol("update", f"jobid={job}", "TimeLimit=10")  # the next allocations run until preempted or done

        def trained_past(step: int) -> bool | None:
            [run] = _runs(tmp_path)
            history = client.get_metric_history(run.info.run_id, "train/loss")
            return True if run.info.status == "RUNNING" and max(m.step for m in history) > step else None

        _wait_for("the requeued job to train on", lambda: trained_past(first_stop + 20), sweep, 180)
        _scontrol("requeue", job)
        run = _wait_for("the preemption's SIGTERM", lambda: stopped_by("SIGTERM"), sweep, 120)
        second_stop = int(run.data.tags["lmlab.stopped_at_step"])
        assert first_stop < second_stop < steps
        _, stderr = sweep.communicate(timeout=420)
    finally:
        if sweep.poll() is None:
            sweep.kill()
            subprocess.run(["scancel", "--name", "train"], check=False)
    assert sweep.returncode == 0, stderr[-3000:]
    [run] = _runs(tmp_path)
    assert run.info.run_id == run_id and run.info.status == "FINISHED"
    assert run.data.tags["lmlab.resume_count"] == "2" and run.data.tags["lmlab.slurm_job_id"] == job
    assert int(run.data.tags["lmlab.resumed_from_step"]) == second_stop
    logged = sorted(m.step for m in client.get_metric_history(run_id, "train/loss"))
    assert logged == list(range(steps)), "every step logged exactly once"
    run_dir = Path(run.data.tags["lmlab.run_dir"])
    assert load_export(str(run_dir)).global_step == steps
    assert torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == steps
    assert {p.name for p in run_dir.parent.iterdir()} == {run_dir.name, "multirun.yaml", ".submitit"}  # one job dir
