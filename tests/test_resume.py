"""Runs that survive interruption: resume by default from the newest complete checkpoint, exact continuation of
the loss series, signal-triggered checkpoints, broken and malicious checkpoints, config drift, and one MLflow run
without duplicated metrics."""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from mlflow.tracking import MlflowClient

from lmlab.callbacks.preemption import StopOnSignal, StoppedOnSignal
from lmlab.pretraining.run import pretrain
from lmlab.runs.checkpoints import checkpoint_step, latest_checkpoint
from lmlab.runs.export_dir import load_export

from .conftest import ROOT, TINY, run_env, signal_after_checkpoint

QUICK = [*TINY, "trainer.log_every_n_steps=1", "model.dropout=0.1"]


def _client(project: Path) -> MlflowClient:
    return MlflowClient(f"sqlite:///{project}/mlflow.db")


def _losses(run_dir: Path) -> dict[int, float]:
    rows = {}
    for path in sorted((run_dir / "csv").glob("*/metrics.csv")):
        with open(path) as f:
            rows.update({int(r["step"]): float(r["train/loss"]) for r in csv.DictReader(f) if r.get("train/loss")})
    return rows


def test_interrupted_and_resumed_run_continues_the_exact_loss_series(compose_config, project, stop_at):
    overrides = (*QUICK, "trainer.max_steps=40", "logger=csv")
    pretrain(compose_config(*overrides), project / "whole")
    stop_at(17)
    pretrain(compose_config(*overrides), project / "cut")
    assert torch.load(project / "cut" / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 17
    assert not (project / "cut" / "export").exists()  # a stopped run is not exported as finished
    pretrain(compose_config(*overrides), project / "cut")  # the same command again: resumes at step 17
    whole, cut = _losses(project / "whole"), _losses(project / "cut")
    assert sorted(cut) == sorted(whole) == list(range(40))
    assert [cut[s] for s in range(40)] == pytest.approx([whole[s] for s in range(40)], abs=1e-6)


@pytest.mark.parametrize("stop", [10, 21])
def test_last_ckpt_follows_a_resumed_run(compose_config, project, stop_at, stop):
    """Stopping at step 10 saves last.ckpt before the checkpoint callback ever wrote one; the resumed run must keep
    overwriting that file (not start a last-v1.ckpt beside a stale last.ckpt)."""
    overrides = (*QUICK, "trainer.max_steps=30", "logger=none")
    stop_at(stop)
    pretrain(compose_config(*overrides), project / "run")
    stop_at(-1)
    pretrain(compose_config(*overrides), project / "run")
    ckpts = {
        p.name: torch.load(p, weights_only=True)["global_step"] for p in (project / "run" / "checkpoints").iterdir()
    }
    assert ckpts["last.ckpt"] == 30 and not any(name.startswith("last-v") for name in ckpts)


def test_resume_continues_the_same_mlflow_run_without_duplicate_metrics(compose_config, project, stop_at):
    run_dir = project / "run"
    stop_at(12)
    pretrain(compose_config(*QUICK, "trainer.max_steps=30"), run_dir)
    client = _client(project)
    [run] = client.search_runs([client.get_experiment_by_name("lmlab").experiment_id])
    assert run.info.status == "KILLED" and run.data.tags["lmlab.stopped_at_step"] == "12"
    # Crash-like: metrics beyond the checkpoint reach MLflow, then the run restarts from step 12 and replays them.
    for step in (12, 13):
        client.log_metric(run.info.run_id, "train/loss", 9.9, step=step)
    stop_at(-1)
    pretrain(compose_config(*QUICK, "trainer.max_steps=30"), run_dir)
    [run] = client.search_runs([client.get_experiment_by_name("lmlab").experiment_id])
    assert run.info.status == "FINISHED"
    tags = run.data.tags
    assert tags["lmlab.resume_count"] == "1" and tags["lmlab.resumed_from_step"] == "12"
    steps = [m.step for m in client.get_metric_history(run.info.run_id, "train/loss")]
    assert sorted(steps) == list(range(30)), "every step once"
    assert (run_dir / "export" / "model.safetensors").is_file()
    # The throughput counts go on across the resume: 30 steps of 16 blocks, and time that never runs backwards.
    samples = sorted((m.step, m.value) for m in client.get_metric_history(run.info.run_id, "train/samples"))
    assert samples[-1][1] == 30 * 16, samples[-3:]
    times = [v for _, v in sorted((m.step, m.value) for m in client.get_metric_history(run.info.run_id, "train/time"))]
    assert times == sorted(times), times


def test_a_changed_config_is_refused_on_resume_unless_allowed(compose_config, project):
    run_dir = project / "run"
    pretrain(compose_config(*TINY, "trainer.max_steps=10", "logger=none"), run_dir)
    with pytest.raises(ValueError, match=r"optim.lr: .* -> 0.5.*allow_config_change=true"):
        pretrain(compose_config(*TINY, "trainer.max_steps=10", "logger=none", "optim.lr=0.5"), run_dir)
    assert torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 10
    pretrain(compose_config(*TINY, "trainer.max_steps=15", "logger=none", "allow_config_change=true"), run_dir)
    assert torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 15
    pretrain(compose_config(*TINY, "trainer.max_steps=5", "logger=none", "resume=false"), run_dir)
    assert (run_dir / "checkpoints.1" / "last.ckpt").is_file()  # the earlier run's checkpoints are kept


def test_a_truncated_checkpoint_is_skipped_for_the_previous_one(compose_config, project, caplog):
    run_dir = project / "run"
    pretrain(compose_config(*TINY, "trainer.max_steps=20", "trainer.val_check_interval=10", "logger=none"), run_dir)
    ckpts = run_dir / "checkpoints"
    best = next(p for p in ckpts.iterdir() if p.name.startswith("best-step"))
    last = ckpts / "last.ckpt"
    last.write_bytes(last.read_bytes()[: last.stat().st_size // 2])
    path, step = latest_checkpoint(ckpts)
    assert path == best and (ckpts / "last.ckpt.corrupt").is_file()
    assert "Skipping a broken checkpoint" in caplog.text
    best.write_bytes(b"not a checkpoint")
    with pytest.raises(RuntimeError, match="every checkpoint in .* is broken.*resume=false"):  # extending the run
        pretrain(compose_config(*TINY, "trainer.max_steps=30", "logger=none"), run_dir)


class _Payload:
    def __reduce__(self):
        return (os.system, (f"touch {Path.cwd() / 'pwned'}",))


def test_a_checkpoint_crafted_to_run_code_is_rejected(compose_config, project):
    ckpts = project / "run" / "checkpoints"
    ckpts.mkdir(parents=True)
    torch.save(
        {"state_dict": {}, "global_step": 5, "loops": {}, "optimizer_states": [], "x": _Payload()}, ckpts / "last.ckpt"
    )
    with pytest.raises(RuntimeError, match="every checkpoint .* is broken"):
        pretrain(compose_config(*TINY, "logger=none"), project / "run")
    with pytest.raises(ValueError, match="not a loadable checkpoint.*Unpickl|not a loadable checkpoint.*weights_only"):
        pretrain(compose_config(*TINY, "logger=none", f"ckpt_path={ckpts / 'last.ckpt.corrupt'}"), project / "other")
    assert not (Path.cwd() / "pwned").exists()


def test_sigterm_only_sets_a_flag(tmp_path):
    stop = StopOnSignal(tmp_path / "last.ckpt")
    stop.on_train_start(None, None)  # type: ignore[arg-type]
    try:
        os.kill(os.getpid(), signal.SIGTERM)
        assert stop.received == [signal.SIGTERM] and not (tmp_path / "last.ckpt").exists()
    finally:
        stop.teardown(None, None, "fit")  # type: ignore[arg-type]
    assert signal.getsignal(signal.SIGTERM) != stop._flag  # bound methods compare equal, never identical


def test_after_a_stop_the_signal_goes_to_the_handler_that_was_there_before_training(tmp_path):
    """Under submitit, USR2's handler checkpoints the job and requeues it: it must run after our stop, and the
    process must not then report success (submitit would mark the job done)."""
    calls = []
    previous = signal.signal(signal.SIGUSR2, lambda signum, frame: calls.append(signum))
    try:
        stop = StopOnSignal(tmp_path / "last.ckpt")
        with pytest.raises(SystemExit) as exited:
            stop.hand_over(StoppedOnSignal([signal.SIGUSR2], 7))
        assert calls == [signal.SIGUSR2] and exited.value.code == 128 + signal.SIGUSR2
    finally:
        signal.signal(signal.SIGUSR2, previous)
    assert StopOnSignal(tmp_path / "last.ckpt").hand_over(StoppedOnSignal([signal.SIGUSR2], 7)) is None  # no owner


def test_a_non_finite_loss_stops_the_run_and_never_becomes_a_checkpoint(compose_config, project, monkeypatch):
    from lmlab.callbacks.nonfinite import NonFiniteLossError
    from lmlab.pretraining.module import PretrainModule

    honest = PretrainModule.training_step

    def diverging(self, batch, batch_idx):
        loss = honest(self, batch, batch_idx)
        return loss * float("nan") if self.global_step >= 14 else loss

    monkeypatch.setattr(PretrainModule, "training_step", diverging)
    run_dir = project / "run"
    with pytest.raises(NonFiniteLossError, match="the training loss is nan at step 1[45]"):
        pretrain(compose_config(*TINY, "trainer.max_steps=20", "trainer.val_check_interval=10"), run_dir)
    for path in (run_dir / "checkpoints").glob("*.ckpt"):
        state = torch.load(path, weights_only=True)
        assert state["global_step"] == 10
        assert all(torch.isfinite(t).all() for t in state["state_dict"].values() if t.is_floating_point())
    client = _client(project)
    [run] = client.search_runs([client.get_experiment_by_name("lmlab").experiment_id])
    assert run.info.status == "FAILED" and "nan" in run.data.tags["lmlab.failure"]


def test_last_ckpt_holds_the_newest_validation_even_when_validation_loss_stops_improving(
    compose_config, project, monkeypatch
):
    """Lightning 2.6 writes `save_last` only beside a new best checkpoint; a run whose loss stopped improving
    must still keep its newest state, or a kill throws away every step since the best one."""
    from lmlab.pretraining.module import PretrainModule

    def worsening(self):
        self.log("val/loss", float(self.global_step))  # every validation worse than the one before

    monkeypatch.setattr(PretrainModule, "on_validation_epoch_end", worsening)
    run_dir = project / "run"
    pretrain(compose_config(*TINY, "trainer.max_steps=40", "trainer.val_check_interval=10"), run_dir)
    saved = {p.name: checkpoint_step(p) for p in (run_dir / "checkpoints").glob("*.ckpt")}
    assert saved == {"best-step10.ckpt": 10, "last.ckpt": 40}


@pytest.mark.parametrize("override", ["+objective._target_=os.system", "+model._target_=subprocess.run"])
def test_a_config_target_outside_the_allowlist_is_refused_before_anything_runs(compose_config, project, override):
    with pytest.raises(ValueError, match=r"_target_='(os.system|subprocess.run)' is not allowed"):
        pretrain(compose_config(*TINY, override), project / "run")
    assert not (project / "run").exists() and not (project / "mlflow.db").exists()


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGKILL], ids=["SIGTERM", "SIGKILL"])
def test_a_killed_train_py_finishes_its_mlflow_run_when_rerun(tmp_path, signum):
    """The real process and the real signal: SIGTERM saves at the next batch; SIGKILL gives no chance, so the
    rerun continues from the newest validation checkpoint and replays the steps after it. Either way one MLflow
    run ends FINISHED with every step's loss logged once."""
    cmd = [sys.executable, "train.py", *TINY, "trainer.max_steps=400", "trainer.log_every_n_steps=1"]
    env = run_env(tmp_path)
    job, last = signal_after_checkpoint(cmd, tmp_path, env, signum=signum, stage_dir="default", from_step=20)
    stderr = job.stderr
    run_dir = last.parent.parent
    client = _client(tmp_path)
    [run] = client.search_runs([client.get_experiment_by_name("lmlab").experiment_id])
    if signum == signal.SIGTERM:
        assert job.returncode == 0, stderr[-2000:]
        assert run.info.status == "KILLED"
        stopped = int(run.data.tags["lmlab.stopped_at_step"])
        assert torch.load(last, weights_only=True)["global_step"] == stopped
    else:
        assert job.returncode == -signal.SIGKILL and run.info.status == "RUNNING"  # left behind by the kill
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    [run] = client.search_runs([client.get_experiment_by_name("lmlab").experiment_id])
    assert run.info.status == "FINISHED" and run.data.tags["lmlab.resume_count"] == "1"
    assert int(run.data.tags["lmlab.resumed_from_step"]) >= 20
    steps = sorted(m.step for m in client.get_metric_history(run.info.run_id, "train/loss"))
    assert steps == list(range(400))
    assert load_export(str(run_dir)).global_step == 400
    assert checkpoint_step(run_dir / "checkpoints" / "last.ckpt") == 400
