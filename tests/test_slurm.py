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

from lmlab.runs.export_dir import load_export, write_export

from .conftest import ROOT, TINY, run_env
from .test_meta_run import TOY as META_TOY


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
    submitit requeues the job. Allocation 2 is preempted with `scontrol requeue` (SIGTERM). Allocation 3 trains on
    and is cancelled. One MLflow run throughout, every step's loss logged once.

    No allocation can reach trainer.max_steps (far more steps than any CPU trains in minutes): each waits for the
    event the test needs instead of racing it. (The test once finished its 3,000 steps on a quiet machine before
    the time limit's USR2 came, and failed.) Exact continuation to the uninterrupted run's final step is
    tests/test_resume.py's."""
    overrides = [*TINY, "trainer.max_steps=10000000", "trainer.val_check_interval=500", "trainer.log_every_n_steps=1"]
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
    job = None
    try:

        def stopped_by(signal: str, after: int = 0) -> Run | None:
            runs = _runs(tmp_path)
            if (
                runs
                and runs[0].info.status == "KILLED"
                and runs[0].data.tags.get("lmlab.stopped_by") == signal
                and int(runs[0].data.tags["lmlab.stopped_at_step"]) > after
            ):
                return runs[0]
            return None

        def trained_past(step: int) -> bool | None:
            [run] = _runs(tmp_path)
            history = client.get_metric_history(run.info.run_id, "train/loss")
            return True if run.info.status == "RUNNING" and max(m.step for m in history) > step else None

        run = _wait_for("the time limit's USR2", lambda: stopped_by("SIGUSR2"), sweep, 240)
        run_id, job = run.info.run_id, run.data.tags["lmlab.slurm_job_id"]
        first_stop = int(run.data.tags["lmlab.stopped_at_step"])
        assert first_stop > 0
        _scontrol("update", f"jobid={job}", "TimeLimit=10")  # the next allocations run until preempted
        _wait_for("the requeued job to train on", lambda: trained_past(first_stop + 20), sweep, 180)
        _scontrol("requeue", job)
        run = _wait_for("the preemption's SIGTERM", lambda: stopped_by("SIGTERM"), sweep, 120)
        second_stop = int(run.data.tags["lmlab.stopped_at_step"])
        assert second_stop > first_stop
        _wait_for("the third allocation to train on", lambda: trained_past(second_stop + 20), sweep, 180)
        subprocess.run(["scancel", job], check=True)
        run = _wait_for("the cancellation's SIGTERM", lambda: stopped_by("SIGTERM", second_stop), sweep, 120)
    finally:
        sweep.kill()
        sweep.communicate()
        subprocess.run(["scancel", "--name", "train"], check=False)
    final_stop = int(run.data.tags["lmlab.stopped_at_step"])
    assert run.info.run_id == run_id
    assert run.data.tags["lmlab.resume_count"] == "2" and run.data.tags["lmlab.slurm_job_id"] == job
    assert int(run.data.tags["lmlab.resumed_from_step"]) == second_stop
    logged = sorted(m.step for m in client.get_metric_history(run_id, "train/loss"))
    assert logged == list(range(final_stop)), "every step up to the last stop logged exactly once"
    run_dir = Path(run.data.tags["lmlab.run_dir"])
    assert torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == final_stop
    assert {p.name for p in run_dir.parent.iterdir()} == {run_dir.name, "multirun.yaml", ".submitit"}  # one job dir


def test_a_meta_learning_sweep_resumes_after_sigterm_into_the_same_run(tmp_path):
    """metalearn.py on the same machinery (see _a_preempted_job_resumes_into_the_same_run; finishing and meta-test:
    tests/test_meta_run.py)."""
    overrides = [
        *[o for o in META_TOY if not o.startswith(("trainer.max_steps", "trainer.val_check_interval"))],
        "trainer.max_steps=10000000",
        "trainer.val_check_interval=50",
    ]
    cmd = [sys.executable, "metalearn.py", "-m", *SLURM, "meta=fomaml", "seed=0,1", *overrides]
    _a_preempted_job_resumes_into_the_same_run(tmp_path, cmd, "train/query_loss", "metalearn")


def test_a_fine_tuning_sweep_resumes_after_requeue_into_the_same_run(tmp_path):
    """finetune.py on the same machinery: a preempted fine-tune continues from its last.ckpt (exactness of the
    continued loss series: tests/test_stage_driver.py)."""
    from .test_finetune import SMALL_DATA, SMALL_MODEL

    overrides = [
        *SMALL_MODEL,
        *SMALL_DATA,
        "task=synthetic_topic",
        "task.train_examples=64",
        "task.validation_examples=16",
        "task.max_length=48",
        "task.batch_size=8",
        "trainer.max_steps=10000000",
        "trainer.val_check_interval=50",
        "trainer.log_every_n_steps=1",
        "trainer.enable_progress_bar=false",
    ]
    cmd = [sys.executable, "finetune.py", "-m", *SLURM, "seed=0,1", *overrides]
    _a_preempted_job_resumes_into_the_same_run(tmp_path, cmd, "train/loss", "finetune")


def test_an_rl_sweep_resumes_after_sigterm_into_the_same_run(tmp_path, tokenizer):
    """rl.py on the same machinery, rollout randomness included (its draws are a function of (seed, step)); finishing
    and the exact loss series after a resume: tests/test_rl.py."""
    from .test_rl import TOY as RL_TOY
    from .test_rl import tiny_decoder

    backbone = tiny_decoder(tokenizer.vocab_size)
    metadata = {"objective": '{"name": "clm"}', "global_step": "0", "run_id": ""}
    policy = write_export(
        tmp_path / "policy", torch.nn.ModuleDict({"backbone": backbone}), backbone.cfg, tokenizer, metadata, {}
    )
    overrides = [
        *[o for o in RL_TOY if not o.startswith(("trainer.max_steps", "trainer.val_check_interval"))],
        "trainer.max_steps=10000000",
        "trainer.val_check_interval=50",
        f"policy={policy}",
    ]
    cmd = [sys.executable, "rl.py", "-m", *SLURM, "rl=grpo", "seed=0,1", *overrides]
    _a_preempted_job_resumes_into_the_same_run(tmp_path, cmd, "train/reward", "rl")


def _a_preempted_job_resumes_into_the_same_run(tmp_path: Path, cmd: list[str], metric: str, job_name: str) -> None:
    """A two-job Slurm sweep, one job preempted (`scontrol requeue`: SIGTERM) mid-training; it continues from its
    last.ckpt into the same MLflow run, every step logged once. No job can reach trainer.max_steps, so each wait is
    for the event the test needs (never for time): the jobs are cancelled once the preempted one has trained on past
    its stop."""
    sweep = subprocess.Popen(
        cmd, cwd=ROOT, env=_env(tmp_path), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")

    def last_step(run: Run) -> int:
        return max((m.step for m in client.get_metric_history(run.info.run_id, metric)), default=-1)

    def training_past(step: int, run_id: str | None = None) -> Run | None:
        for run in _runs(tmp_path):
            if run.info.status == "RUNNING" and run_id in (None, run.info.run_id) and last_step(run) > step:
                return run
        return None

    def stopped(run_id: str, after: int = 0) -> Run | None:
        run = client.get_run(run_id)
        stop = int(run.data.tags.get("lmlab.stopped_at_step", -1))
        ok = run.info.status == "KILLED" and run.data.tags.get("lmlab.stopped_by") == "SIGTERM" and stop > after
        return run if ok else None

    try:
        run = _wait_for(f"a {job_name} job to train past step 60", lambda: training_past(60), sweep, 300)
        run_id = run.info.run_id
        _scontrol("requeue", run.data.tags["lmlab.slurm_job_id"])
        first_stop = int(
            _wait_for("the preemption's SIGTERM", lambda: stopped(run_id), sweep, 120).data.tags[
                "lmlab.stopped_at_step"
            ]
        )
        _wait_for("the requeued job to train on", lambda: training_past(first_stop + 20, run_id), sweep, 300)
        for job in {r.data.tags["lmlab.slurm_job_id"] for r in _runs(tmp_path)}:
            subprocess.run(["scancel", job], check=True)
        run = _wait_for("the cancellation's SIGTERM", lambda: stopped(run_id, first_stop), sweep, 120)
    finally:
        sweep.kill()
        sweep.communicate()
        subprocess.run(["scancel", "--name", job_name], check=False)
    assert run.data.tags["lmlab.resume_count"] == "1"
    assert int(run.data.tags["lmlab.resumed_from_step"]) == first_stop > 60
    final_stop = int(run.data.tags["lmlab.stopped_at_step"])
    logged = sorted(m.step for m in client.get_metric_history(run_id, metric))
    assert logged == list(range(final_stop)), "every step up to the last stop logged exactly once"
    runs = _runs(tmp_path)
    assert len(runs) == 2 and len({r.data.tags["lmlab.slurm_job_id"] for r in runs}) == 2
