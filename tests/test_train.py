"""End-to-end pretraining runs at toy size: learning, tracking, checkpoints, resume, determinism."""

from __future__ import annotations

import json
import logging
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from mlflow.tracking import MlflowClient
from safetensors.torch import load_model

from lmlab.models import Backbone, ModelConfig
from lmlab.pretraining.run import pretrain

from .conftest import ROOT, TINY, run_env


def _client(project: Path) -> MlflowClient:
    return MlflowClient(f"sqlite:///{project}/mlflow.db")


def _runs(project: Path):
    client = _client(project)
    experiment = client.get_experiment_by_name("lmlab")
    return client.search_runs([experiment.experiment_id]) if experiment else []


def _history(client: MlflowClient, run_id: str, key: str) -> list[tuple[int, float]]:
    return sorted((m.step, m.value) for m in client.get_metric_history(run_id, key))


@pytest.mark.slow
def test_run_learns_and_records_everything_in_mlflow(compose_config, project):
    # 64 wide with a width-appropriate init leaves the unigram plateau within ~1,000 steps (about 20 s).
    cfg = compose_config(
        *TINY,
        "model.d_model=64",
        "model.d_ff=128",
        "model.init_std=0.125",
        "optim.lr=3e-3",
        "data.world.train_documents=1000",
        "trainer.max_steps=1500",
        "trainer.val_check_interval=250",
        "trainer.log_every_n_steps=25",
    )
    run_dir = project / "outputs" / "run"
    pretrain(cfg, run_dir)

    [run] = _runs(project)
    client = _client(project)
    assert run.info.status == "FINISHED"
    params = run.data.params
    assert params["model.d_model"] == "64" and params["objective.mask_prob"] == "0.15"
    assert params["data.world.train_documents"] == "1000" and params["seed"] == "0"
    tags = run.data.tags
    for key in (
        "lmlab.git_commit",
        "lmlab.git_dirty",
        "lmlab.command",
        "lmlab.overrides",
        "lmlab.data_fingerprint",
        "lmlab.tokenizer_fingerprint",
        "mlflow.source.git.commit",
    ):
        assert key in tags, key
    assert len(tags["lmlab.data_fingerprint"]) == 16
    for key in (
        "train/loss",
        "val/loss",
        "val/ppl",
        "val/acc",
        "lr",
        "train/device/items_per_sec",
        "train/device/flops_per_sec",
    ):
        assert key in run.data.metrics, key
    ppl = _history(client, run.info.run_id, "val/ppl")
    assert [s for s, _ in ppl] == [0, 250, 500, 750, 1000, 1250, 1500]  # after that many optimizer steps
    assert ppl[-1][1] < ppl[0][1] / 5, ppl
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert artifacts == {
        "config.yaml",
        "tokenizer.json",
        "model.safetensors",
        "loss_curve.png",
        "examples.txt",
        "environment.txt",
    }
    examples = (run_dir / "examples.txt").read_text()
    assert examples.count("== example") == 3 and "[MASK]" in examples and "targets: " in examples

    # the exported weights load into a fresh backbone of the recorded shape
    export = run_dir / "export"
    assert (export / "loss_curve.png").read_bytes()[:4] == b"\x89PNG"
    model_cfg = ModelConfig(
        n_layers=2, d_model=64, n_heads=2, d_ff=128, positions="rotary", vocab_size=cfg_vocab(export)
    )
    backbone = Backbone(model_cfg)
    from lmlab.objectives.mlm import MLMHead

    load_model(
        torch.nn.ModuleDict({"backbone": backbone, "head": MLMHead(model_cfg)}),
        str(export / "model.safetensors"),
    )

    # checkpoints: last and best, loadable with weights_only=True, holding no OmegaConf objects
    ckpts = sorted(p.name for p in (run_dir / "checkpoints").iterdir())
    assert "last.ckpt" in ckpts and any(n.startswith("best-step") for n in ckpts)
    state = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    assert state["global_step"] == 1500


def cfg_vocab(export: Path) -> int:
    from tokenizers import Tokenizer

    return Tokenizer.from_file(str(export / "tokenizer.json")).get_vocab_size()


def test_resume_continues_from_the_saved_step_in_the_same_mlflow_run(compose_config, project):
    run_dir = project / "outputs" / "run"
    pretrain(compose_config(*TINY, "trainer.max_steps=20"), run_dir)
    last = run_dir / "checkpoints" / "last.ckpt"
    assert torch.load(last, weights_only=True)["global_step"] == 20

    pretrain(compose_config(*TINY, "trainer.max_steps=30", f"ckpt_path={last}", "allow_config_change=true"), run_dir)
    [run] = _runs(project)
    assert run.info.status == "FINISHED"
    assert run.data.tags["lmlab.resume_count"] == "1"
    assert torch.load(last, weights_only=True)["global_step"] == 30
    steps = [s for s, _ in _history(_client(project), run.info.run_id, "train/loss")]
    assert steps == sorted(set(steps)), "no step was logged twice"
    assert max(steps) == 29 and min(steps) < 20


def test_every_run_ends_with_a_validation(compose_config, project):
    pretrain(compose_config(*TINY, "trainer.max_steps=15", "trainer.val_check_interval=10"), project / "run")
    [run] = _runs(project)
    assert [s for s, _ in _history(_client(project), run.info.run_id, "val/loss")] == [0, 10, 15]
    pretrain(compose_config(*TINY, "trainer.max_steps=4", "trainer.val_check_interval=10"), project / "short")
    short = next(r for r in _runs(project) if r.info.run_id != run.info.run_id)
    assert [s for s, _ in _history(_client(project), short.info.run_id, "val/loss")] == [0, 4]
    assert (project / "short" / "checkpoints" / "best-step4.ckpt").exists()  # the validation logged at step 4


def test_fresh_run_in_the_same_dir_keeps_earlier_checkpoints(compose_config, project):
    run_dir = project / "outputs" / "run"
    pretrain(compose_config(*TINY, "trainer.max_steps=10", "logger=none"), run_dir)
    pretrain(compose_config(*TINY, "trainer.max_steps=10", "logger=none", "resume=false"), run_dir)
    assert (run_dir / "checkpoints" / "last.ckpt").is_file()
    assert (run_dir / "checkpoints.1" / "last.ckpt").is_file()


def test_same_seed_gives_identical_validation_losses(compose_config, project):
    overrides = (*TINY, "trainer.max_steps=20", "logger=none")
    first = pretrain(compose_config(*overrides), project / "a")
    second = pretrain(compose_config(*overrides), project / "b")
    other = pretrain(compose_config(*overrides, "seed=1"), project / "c")
    assert first["val/loss"] == second["val/loss"]
    assert first["val/loss"] != other["val/loss"]


def test_local_text_file_run_reuses_tokenizer_and_token_cache(compose_config, project, caplog):
    text = project / "corpus.txt"
    text.write_text("\n\n".join(f"Paragraph {i} talks about item {i % 7} and item {i % 5}." for i in range(300)))
    overrides = (
        *TINY,
        "data=text",
        f"data.files=[{text}]",
        "data.tokenizer.vocab_size=300",
        "trainer.max_steps=4",
        "logger=csv",
    )
    caplog.set_level(logging.INFO)
    pretrain(compose_config(*overrides), project / "run1")
    assert "Training a wordpiece tokenizer" in caplog.text and "Tokenizing the train split" in caplog.text
    caplog.clear()
    pretrain(compose_config(*overrides), project / "run2")
    assert "Reusing cached tokenizer" in caplog.text and "Reusing token cache" in caplog.text
    assert "Tokenizing" not in caplog.text
    assert (project / "run2" / "csv").is_dir()


@pytest.mark.parametrize(
    "overrides, error, message",
    [
        (["data.block_size=600"], ValueError, "exceeds model.max_positions"),
        (["data.tokenizer.vocab_size=3"], ValueError, "too small"),
        (["data=text", "data.files=[/no/such/file.txt]"], FileNotFoundError, "/no/such/file.txt"),
        (["ckpt_path=/no/such.ckpt"], FileNotFoundError, "/no/such.ckpt"),
    ],
)
def test_bad_input_fails_before_training_and_writes_nothing(compose_config, project, overrides, error, message):
    with pytest.raises(error, match=message):
        pretrain(compose_config(*TINY, *overrides), project / "run")
    assert not (project / "mlflow.db").exists()
    assert not (project / "run" / "checkpoints").exists()


def test_empty_corpus_is_refused(compose_config, project):
    blank = project / "blank.txt"
    blank.write_text("\n\n   \n")
    with pytest.raises(ValueError, match="no vocabulary|empty"):
        pretrain(compose_config(*TINY, "data=text", f"data.files=[{blank}]"), project / "run")


@pytest.mark.slow
@pytest.mark.parametrize("launcher", ["basic", "local"])
def test_multirun_gives_one_mlflow_run_per_job_grouped_as_a_sweep(tmp_path, launcher):
    cmd = [
        sys.executable,
        "train.py",
        "-m",
        "objective.mask_prob=0.15,0.3",
        *TINY,
        "trainer.max_steps=4",
        f"hydra/launcher={launcher}",
    ]
    done = subprocess.run(cmd, cwd=ROOT, env=run_env(tmp_path), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    runs = _runs(tmp_path)
    assert len(runs) == 2
    assert {r.data.params["objective.mask_prob"] for r in runs} == {"0.15", "0.3"}
    assert all(r.info.status == "FINISHED" for r in runs)
    sweeps = {r.data.tags["lmlab.sweep"] for r in runs}
    assert len(sweeps) == 1
    assert "objective.mask_prob=0.15,0.3" in runs[0].data.tags["lmlab.sweep_overrides"]
    # each job has its own deterministic output dir, which records its own MLflow run
    recorded = {json.loads(p.read_text())["run_id"] for p in (tmp_path / "outputs" / "default").glob("*/tracking.json")}
    assert recorded == {r.info.run_id for r in runs}


@pytest.mark.slow
def test_bert_base_trains_on_cpu(tmp_path):
    cmd = [
        sys.executable,
        "train.py",
        "model=base",
        "objective=mlm",
        "trainer=debug",
        "trainer.max_steps=2",
        "trainer.val_check_interval=2",
        "trainer.limit_val_batches=1",
        "data.batch_size=4",
        "data.world.train_documents=300",
        "data.world.validation_documents=40",
        "logger=none",
    ]
    done = subprocess.run(cmd, cwd=ROOT, env=run_env(tmp_path), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    millions = float(re.search(r"Model: encoder, ([0-9.]+)M parameters", done.stdout + done.stderr).group(1))
    assert 85 < millions < 88  # BERT-base blocks (85M) + a 1.6k-token embedding of the synthetic world


@pytest.mark.slow
def test_compiled_run_saves_uncompiled_names(compose_config, project):
    from safetensors import safe_open

    run_dir = project / "run"
    pretrain(compose_config(*TINY, "trainer.max_steps=4", "trainer.compile=true", "logger=none"), run_dir)
    with safe_open(str(run_dir / "export" / "model.safetensors"), "pt") as f:
        names = list(f.keys())
    ckpt = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    assert "backbone.token_embedding.weight" in names
    assert not [n for n in [*names, *ckpt] if "_orig_mod" in n]
