"""The stage driver's guarantees on every stage (`lmlab.runs.driver`): fine-tuning resumes exactly into the same
MLflow run, `task.select` chooses the exported weights, and every stage stops on a non-finite loss with the reason
recorded and no poisoned checkpoint."""

from __future__ import annotations

import math
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from mlflow.tracking import MlflowClient

from lmlab.callbacks.nonfinite import NonFiniteLossError
from lmlab.finetuning.run import finetune
from lmlab.runs.checkpoints import checkpoint_step
from lmlab.runs.export_dir import load_export

from .conftest import ROOT, run_env, signal_after_checkpoint
from .test_finetune import SMALL_DATA, SMALL_MODEL, compose_finetune

# A fine-tune from scratch on 64 synthetic documents: 30 steps of batch 8, dropout on (its RNG must resume too).
FT = [
    "task=synthetic_topic",
    "pretrained=none",
    "task.train_examples=64",
    "task.validation_examples=16",
    "task.max_length=48",
    "task.batch_size=8",
    "trainer.max_steps=30",
    "trainer.val_check_interval=10",
    "trainer.log_every_n_steps=1",
    "model.dropout=0.1",
]


def _client(root: Path) -> MlflowClient:
    return MlflowClient(f"sqlite:///{root}/mlflow.db")


def _only_run(root: Path):
    client = _client(root)
    [run] = client.search_runs([e.experiment_id for e in client.search_experiments()])
    return client, run


def _losses(client: MlflowClient, run_id: str) -> dict[int, float]:
    history = client.get_metric_history(run_id, "train/loss")
    steps = [m.step for m in history]
    assert len(steps) == len(set(steps)), "every step logged once"
    return {m.step: m.value for m in history}


def test_a_stopped_fine_tune_resumes_into_the_same_run_with_the_exact_loss_series(project, tmp_path, stop_at):
    whole_root = tmp_path / "whole"
    whole_root.mkdir()
    finetune(compose_finetune(*FT, f"logger.tracking_uri=sqlite:///{whole_root}/mlflow.db"), whole_root / "ft")
    client, whole = _only_run(whole_root)
    expected = _losses(client, whole.info.run_id)
    assert sorted(expected) == list(range(30))

    stop_at(13)
    finetune(compose_finetune(*FT), project / "ft")
    client, cut = _only_run(project)
    assert cut.info.status == "KILLED" and cut.data.tags["lmlab.stopped_at_step"] == "13"
    assert checkpoint_step(project / "ft" / "checkpoints" / "last.ckpt") == 13
    assert not (project / "ft" / "export").exists()
    stop_at(-1)
    finetune(compose_finetune(*FT), project / "ft")  # the same command: continues at step 13
    client, resumed = _only_run(project)
    assert resumed.info.run_id == cut.info.run_id and resumed.info.status == "FINISHED"
    assert resumed.data.tags["lmlab.resumed_from_step"] == "13"
    got = _losses(client, resumed.info.run_id)
    assert sorted(got) == list(range(30))
    assert [got[s] for s in range(30)] == pytest.approx([expected[s] for s in range(30)], abs=1e-6)
    assert resumed.data.metrics["val/acc"] == pytest.approx(whole.data.metrics["val/acc"], abs=1e-6)
    assert load_export(str(project / "ft")).global_step == 30


def test_task_select_says_which_weights_are_exported_and_scored(project, monkeypatch):
    """The validation loss is the honest one; accuracy is made to peak at step 10, so `best` picks that checkpoint.
    The result is the selected weights scored again: their loss equals the loss logged at their step."""
    from lmlab.finetuning.module import FinetuneModule

    def acc_peaks_at_step_10(self):
        acc = torch.tensor(1.0 if self.global_step == 10 else 0.5)
        self.log_dict({"val/loss": self.val_loss.compute(), "val/acc": acc}, prog_bar=True)
        self.val_loss.reset()
        self.val_metrics.reset()

    monkeypatch.setattr(FinetuneModule, "on_validation_epoch_end", acc_peaks_at_step_10)
    client = _client(project)
    for select, step in (("best", 10), ("last", 30)):
        run_dir = project / select
        metrics = finetune(compose_finetune(*FT, f"task.select={select}"), run_dir)
        [run] = client.search_runs(
            [e.experiment_id for e in client.search_experiments()], f"tags.`lmlab.select` = '{select}'"
        )
        losses = {m.step: m.value for m in client.get_metric_history(run.info.run_id, "val/loss")}
        assert metrics["val/loss"] == pytest.approx(losses[step], abs=1e-6), (select, losses)
        chosen = run_dir / "checkpoints" / ("best-step10.ckpt" if select == "best" else "last.ckpt")
        assert checkpoint_step(chosen) == step
        saved = torch.load(chosen, weights_only=True)["state_dict"]
        exported = load_export(str(run_dir)).weights
        assert all(torch.equal(exported[k], saved[k]) for k in exported), select


def test_a_bad_select_is_refused_naming_the_choices(project):
    from lmlab.errors import InputError

    with pytest.raises(InputError, match=r"task.select='first' is not supported; expected one of \['last', 'best'\]"):
        finetune(compose_finetune(*FT, "task.select=first"), project / "ft")
    assert not (project / "ft").exists()


def _poisoned(run_dir: Path) -> list[str]:
    """The checkpoints in `run_dir` that hold a non-finite weight."""
    bad = []
    for path in (run_dir / "checkpoints").glob("*.ckpt"):
        state = torch.load(path, weights_only=True)["state_dict"]
        if not all(torch.isfinite(t).all() for t in state.values() if t.is_floating_point()):
            bad.append(path.name)
    return bad


def _failed_on_nan(root: Path, run_dir: Path) -> None:
    _, run = _only_run(root)
    assert run.info.status == "FAILED" and "NonFiniteLossError" in run.data.tags["lmlab.failure"]
    assert "nan" in run.data.tags["lmlab.failure"]
    assert (run_dir / "checkpoints" / "last.ckpt").is_file() and not _poisoned(run_dir)


def test_a_fine_tune_stops_on_a_non_finite_loss(project, monkeypatch):
    from lmlab.finetuning.module import FinetuneModule

    honest = FinetuneModule.training_step

    def diverging(self, batch, batch_idx):
        loss = honest(self, batch, batch_idx)
        return loss * float("nan") if self.global_step >= 12 else loss

    monkeypatch.setattr(FinetuneModule, "training_step", diverging)
    with pytest.raises(NonFiniteLossError, match="the training loss is nan at step 1[23]"):
        finetune(compose_finetune(*FT), project / "ft")
    _failed_on_nan(project, project / "ft")


def test_meta_learning_stops_on_a_non_finite_loss_before_the_weights_change(project, monkeypatch):
    from lmlab.meta.algorithms.base import MetaAlgorithm
    from lmlab.meta.run import metalearn

    from .test_meta_run import compose_meta

    honest = MetaAlgorithm.meta_gradients
    calls = []

    def diverging(self, episodes):
        metrics = honest(self, episodes)
        calls.append(1)
        return {key: value * float("nan") for key, value in metrics.items()} if len(calls) > 4 else metrics

    monkeypatch.setattr(MetaAlgorithm, "meta_gradients", diverging)
    with pytest.raises(NonFiniteLossError, match="is nan at step 4"):
        metalearn(compose_meta("meta=maml"), project / "meta")
    _failed_on_nan(project, project / "meta")


@pytest.fixture
def policy(tmp_path: Path, tokenizer) -> Path:
    """An untrained tiny decoder exported as a causal LM run."""
    from lmlab.runs.export_dir import write_export

    from .test_rl import tiny_decoder

    backbone = tiny_decoder(tokenizer.vocab_size)
    metadata = {"objective": '{"name": "clm"}', "global_step": "0", "run_id": ""}
    weights = torch.nn.ModuleDict({"backbone": backbone})
    return write_export(tmp_path / "policy", weights, backbone.cfg, tokenizer, metadata, {})


def test_rl_stops_on_a_non_finite_loss(project, policy, monkeypatch):
    from lmlab.rl.algorithms.grpo import GRPO
    from lmlab.rl.run import rl

    from .test_rl import compose_rl

    honest = GRPO.policy_loss
    calls = []

    def diverging(self, *args, **kwargs):
        loss = honest(self, *args, **kwargs)
        calls.append(1)
        return loss * float("nan") if len(calls) > 2 else loss

    monkeypatch.setattr(GRPO, "policy_loss", diverging)
    with pytest.raises(NonFiniteLossError, match="the training loss is nan at step 2"):
        rl(compose_rl(policy, "rl=grpo"), project / "rl")
    _failed_on_nan(project, project / "rl")


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGKILL], ids=["SIGTERM", "SIGKILL"])
def test_a_killed_finetune_py_continues_its_run_when_rerun(tmp_path, signum):
    """The real process and the real signal: SIGTERM saves at the next batch; SIGKILL gives no chance, so the rerun
    continues from the newest validation checkpoint and replays the steps after it. Either way one MLflow run ends
    FINISHED with every step's loss logged once."""
    steps = 400
    args = [a for a in FT if not a.startswith(("trainer.max_steps", "model.dropout"))]
    cmd = [sys.executable, "finetune.py", *SMALL_MODEL, *SMALL_DATA, *args, f"trainer.max_steps={steps}"]
    env = run_env(tmp_path)
    job, last = signal_after_checkpoint(cmd, tmp_path, env, signum=signum, stage_dir="finetune", from_step=20)
    stderr = job.stderr
    client, run = _only_run(tmp_path)
    if signum == signal.SIGTERM:
        assert job.returncode == 0, stderr[-2000:]
        assert run.info.status == "KILLED"
        assert checkpoint_step(last) == int(run.data.tags["lmlab.stopped_at_step"])
    else:
        assert job.returncode == -signal.SIGKILL and run.info.status == "RUNNING"  # left behind by the kill
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    client, resumed = _only_run(tmp_path)
    assert resumed.info.run_id == run.info.run_id and resumed.info.status == "FINISHED"
    assert resumed.data.tags["lmlab.resume_count"] == "1" and int(resumed.data.tags["lmlab.resumed_from_step"]) >= 20
    assert sorted(_losses(client, resumed.info.run_id)) == list(range(0, steps))
    assert math.isfinite(resumed.data.metrics["val/acc"])
    assert load_export(str(last.parent.parent)).global_step == steps
