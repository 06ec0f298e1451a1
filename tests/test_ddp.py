"""DDP on the CPU (2 processes, gloo): one job is one output dir and one MLflow run, however many ranks train it,
and a SIGTERM to rank 0 stops every rank at the same batch (saving is a collective) for an exact resume."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from mlflow.tracking import MlflowClient

from lmlab.runs.export_dir import load_export

from .conftest import ROOT, TINY, run_env, sigterm_after_first_checkpoint

pytestmark = pytest.mark.slow


def test_two_ranks_make_one_run_in_one_dir_and_stop_together_on_sigterm(tmp_path):
    steps = 200
    cmd = [
        sys.executable,
        "train.py",
        *TINY,
        "trainer.devices=2",
        f"trainer.max_steps={steps}",
        "trainer.val_check_interval=20",
    ]
    env = {**run_env(tmp_path), "OMP_NUM_THREADS": "1"}
    interrupted = sigterm_after_first_checkpoint(cmd, tmp_path, env)
    assert interrupted.returncode == 0, interrupted.stderr[-3000:]
    [run_dir] = (tmp_path / "outputs" / "default").iterdir()
    stopped = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)["global_step"]
    assert 0 < stopped < steps
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert [p.name for p in (tmp_path / "outputs" / "default").iterdir()] == [run_dir.name]
    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    [run] = client.search_runs([client.get_experiment_by_name("lmlab").experiment_id])
    assert run.info.status == "FINISHED" and run.data.tags["lmlab.resumed_from_step"] == str(stopped)
    logged = [m.step for m in client.get_metric_history(run.info.run_id, "train/loss")]
    assert len(logged) == len(set(logged)) == steps // 2, "every logged step once, from one rank"
    assert load_export(str(run_dir)).global_step == steps


def test_two_ranks_train_a_mixture_whose_heads_take_turns(tmp_path):
    """Each batch trains one component's head, so the other gets no gradient that step: DDP is told to look for
    unused parameters (without that it stops: "your LightningModule has parameters that were not used")."""
    pairs = "objective.components=[{name:mlm,weight:0.5},{name:sop,weight:0.5}]"
    cmd = [sys.executable, "train.py", *TINY, "objective=mixture", "model.layout=encoder", "model.segments=2", pairs]
    env = {**run_env(tmp_path), "OMP_NUM_THREADS": "1"}
    done = subprocess.run([*cmd, "trainer.devices=2"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    [run] = client.search_runs([client.get_experiment_by_name("lmlab").experiment_id])
    parts = {key for key in run.data.metrics if key.startswith("train/")}
    assert {"train/mlm_loss", "train/sop_loss"} <= parts, parts  # both heads trained


@pytest.mark.parametrize("stage", ["finetune", "metalearn", "rl"])
def test_two_ranks_of_every_stage_make_one_mlflow_run(tmp_path, stage, tokenizer):
    """The driver opens the run on the lead process only, for every stage."""
    from lmlab.runs.export_dir import write_export

    from .test_finetune import SMALL_DATA, SMALL_MODEL
    from .test_meta_run import TOY as META_TOY
    from .test_rl import TOY as RL_TOY
    from .test_rl import tiny_decoder

    if stage == "finetune":
        args = [
            *SMALL_MODEL,
            *SMALL_DATA,
            "task.train_examples=64",
            "task.validation_examples=16",
            "task.max_length=48",
            "task.batch_size=8",
            "trainer.max_steps=6",
            "trainer.val_check_interval=3",
        ]
    elif stage == "metalearn":
        args = META_TOY
    else:
        backbone = tiny_decoder(tokenizer.vocab_size)
        metadata = {"objective": '{"name": "clm"}', "global_step": "0", "run_id": ""}
        weights = torch.nn.ModuleDict({"backbone": backbone})
        policy = write_export(tmp_path / "policy", weights, backbone.cfg, tokenizer, metadata, {})
        args = [*RL_TOY, f"policy={policy}"]
    cmd = [sys.executable, f"{stage}.py", *args, "trainer.devices=2", "trainer.strategy=ddp"]
    env = {**run_env(tmp_path), "OMP_NUM_THREADS": "1"}
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    assert [r.info.status for r in runs] == ["FINISHED"], [(r.info.run_name, r.info.status) for r in runs]
