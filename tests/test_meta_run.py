"""metalearn.py end to end at toy size: a tracked run with its pools, per-episode artifact and export; the baseline
that trains nothing; the results table; a Slurm sweep that resumes after SIGTERM into the same MLflow run."""

from __future__ import annotations

import csv
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from mlflow.tracking import MlflowClient

from lmlab.data.config import DataConfig, WorldConfig
from lmlab.meta.config import register_meta_configs
from lmlab.meta.results import domains_table, fewshot_table
from lmlab.meta.run import metalearn
from lmlab.pretraining.evaluate import AdaptConfig, evaluate_run
from lmlab.runs.export_dir import load_export

from .conftest import CONF, ROOT, TINY, run_env

TOY = [
    *(o for o in TINY if o.startswith(("model.", "data.world.", "data.tokenizer."))),
    "episodes.examples_per_class=16",
    "episodes.q_query=5",
    "eval.val_episodes=4",
    "eval.test_episodes=8",
    "eval.inner_lrs=[0.1,1.0]",
    "eval.steps=2",
    "trainer.max_steps=6",
    "trainer.val_check_interval=3",
    "trainer.enable_progress_bar=false",
    "trainer.log_every_n_steps=1",
    "meta.inner_steps=2",
    "meta.tasks_per_step=2",
]

# A language model meta-trained over text domains, from a fresh tiny decoder (the toy world's people).
DOMAIN_TOY = [
    *(o for o in TOY if not o.startswith("episodes.")),
    "episodes=people",
    "model.layout=decoder",
    "meta.adapt=all",
    "episodes.world.people=15",
    "episodes.max_length=32",
    "episodes.support_rows=2",
    "episodes.query_rows=1",
]

register_meta_configs()


def compose_meta(*overrides: str, toy: list[str] = TOY):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose("metalearn", overrides=[*toy, *overrides])


def _runs(root: Path):
    client = MlflowClient(f"sqlite:///{root}/mlflow.db")
    return client, client.search_runs([client.get_experiment_by_name("lmlab").experiment_id])


def test_a_meta_learning_run_is_tracked_with_its_pools_episodes_and_export(project):
    metrics = metalearn(compose_meta("meta=fomaml"), project / "run")
    client, [run] = _runs(project)
    assert run.info.status == "FINISHED"
    tags, logged = run.data.tags, run.data.metrics
    assert (
        tags["lmlab.kind"] == "meta" and tags["lmlab.meta"] == "fomaml" and tags["lmlab.episodes"] == "synthetic_topic"
    )
    assert tags["lmlab.meta_test_inner_lr"] in ("0.1", "0.3", "1")  # the grid, and the method's own inner lr
    assert {"lr_search/val_acc_at_0.1", "lr_search/val_acc_at_0.3", "lr_search/val_acc_at_1"} <= set(logged)
    assert 0 <= logged["test/acc"] <= 1 and logged["test/episodes"] == 8 and metrics["test/acc"] == logged["test/acc"]
    assert {"test/query_loss_step0", "test/query_loss_step2", "lr_search/val_acc_at_0.1", "val/acc"} <= set(logged)
    steps = sorted(m.step for m in client.get_metric_history(run.info.run_id, "train/query_loss"))
    assert steps == list(range(6))
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"pools.json", "meta_test_episodes.csv", "model.safetensors"} <= artifacts
    pools = json.loads((project / "run" / "pools.json").read_text())
    assert not set(pools["train"]) & set(pools["test"]) and pools["dropped"] == {}
    with open(project / "run" / "meta_test_episodes.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 8 and all(len(r["classes"].split("|")) == 5 for r in rows)
    exported = load_export(str(project / "run"))
    assert exported.objective_name == "fomaml" and exported.global_step == 6


def test_the_fine_tuning_baseline_trains_nothing_and_the_table_pairs_methods_over_episodes(project):
    metalearn(compose_meta("meta=finetune"), project / "base")
    metalearn(compose_meta("meta=protonet"), project / "proto")
    client, runs = _runs(project)
    base = next(r for r in runs if r.data.tags["lmlab.meta"] == "finetune")
    assert client.get_metric_history(base.info.run_id, "train/loss") == []
    assert not (project / "base" / "checkpoints").exists() or not any((project / "base" / "checkpoints").iterdir())
    table = fewshot_table(client, runs)
    lines = table.splitlines()
    assert lines[0].startswith("| method | seeds | meta-test acc") and len(lines) == 4
    proto = next(line for line in lines if line.startswith("| protonet "))
    assert "none (prototypes)" in proto and "±" in proto.split("|")[5]  # a paired difference with its interval


def test_a_training_override_for_the_baseline_is_refused_naming_it(tmp_path):
    cmd = [sys.executable, "metalearn.py", "meta=finetune", "trainer.max_steps=50", "logger=none"]
    done = subprocess.run(cmd, cwd=ROOT, env=run_env(tmp_path), capture_output=True, text=True, timeout=300)
    assert done.returncode == 1
    assert "['trainer.max_steps=50'] would be ignored: meta=finetune does no meta-training" in done.stderr
    assert "Traceback" not in done.stderr and not (tmp_path / "mlflow.db").exists()
    assert not any(p.is_file() for p in (tmp_path / "outputs").rglob("*"))


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("trainer.accumulate_grad_batches=2", "a meta-learning step already averages meta.tasks_per_step episodes"),
        ("episodes.n_way=60", "the meta-val pool has 51 classes of 253, fewer than episodes.n_way=60"),
        ("meta.adapt=some", "meta.adapt='some' is not supported"),
    ],
)
def test_bad_meta_settings_are_refused_before_anything_is_written(project, override, message):
    from lmlab.errors import InputError

    with pytest.raises(InputError, match=message):
        metalearn(compose_meta(override), project / "run")
    assert not (project / "run").exists() and not (project / "mlflow.db").exists()


@pytest.mark.parametrize("toy", [TOY, DOMAIN_TOY], ids=["classes", "domains"])
def test_a_resumed_meta_learning_run_continues_the_exact_episode_and_loss_series(project, toy):
    """Stopped after 3 meta-steps and rerun to 6, a run logs the same per-step losses as one trained to 6 straight: the
    resumed loader continues with the next episodes, the weights and optimiser state come back."""
    metalearn(compose_meta("meta=fomaml", "trainer.max_steps=6", "experiment=straight", toy=toy), project / "straight")
    metalearn(compose_meta("meta=fomaml", "trainer.max_steps=3", "experiment=cut", toy=toy), project / "cut")
    metalearn(
        compose_meta("meta=fomaml", "trainer.max_steps=6", "experiment=cut", "allow_config_change=true", toy=toy),
        project / "cut",
    )
    client, runs = _runs(project)
    by_experiment = {r.data.params["experiment"]: r for r in runs}
    assert by_experiment["cut"].data.tags["lmlab.resumed_from_step"] == "3"

    def losses(run) -> list[tuple[int, float]]:
        return sorted((m.step, m.value) for m in client.get_metric_history(run.info.run_id, "train/query_loss"))

    straight, resumed = losses(by_experiment["straight"]), losses(by_experiment["cut"])
    assert [s for s, _ in resumed] == [s for s, _ in straight] == list(range(6))
    assert [v for _, v in resumed] == pytest.approx([v for _, v in straight], rel=1e-5)


def test_a_language_model_meta_trained_over_domains_is_an_ordinary_causal_lm_run(project):
    """MetaGPT end to end: meta-trained over people domains, meta-tested by perplexity after adaptation (lr chosen by
    the meta-val query loss), paired against the plain causal-LM baseline in the table, exported as a causal LM that
    evaluate.py adapts and scores like any other."""
    metalearn(compose_meta("meta=fomaml", toy=DOMAIN_TOY), project / "meta")
    metalearn(compose_meta("meta=multitask", toy=DOMAIN_TOY), project / "plain")
    client, runs = _runs(project)
    meta = next(r for r in runs if r.data.tags["lmlab.meta"] == "fomaml")
    tags, logged = meta.data.tags, meta.data.metrics
    assert tags["lmlab.episode_kind"] == "domains" and tags["lmlab.episodes"] == "people"
    assert {"lr_search/val_loss_at_0.1", "lr_search/val_loss_at_1", "test/ppl_step2", "val/loss"} <= set(logged)
    assert logged["test/ppl"] < logged["test/ppl_before"]  # adapting to a person's documents helps on the next one
    assert logged["test/ppl_before"] == pytest.approx(math.exp(logged["test/query_loss_step0"]))
    with open(project / "meta" / "meta_test_episodes.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 8 and all(
        r["classes"] in json.loads((project / "meta" / "pools.json").read_text())["test"] for r in rows
    )

    table = domains_table(client, runs).splitlines()
    assert table[0].startswith("| method | seeds | query ppl before adaptation | after 2 steps")
    fomaml = next(line for line in table if line.startswith("| fomaml "))
    assert (
        "%" in fomaml.split("|")[5]
        and next(line for line in table if line.startswith("| multitask ")).split("|")[5].strip() == "—"
    )

    exported = load_export(str(project / "meta"))
    assert exported.objective_name == "clm" and exported.global_step == 6
    data = DataConfig(world=WorldConfig(train_documents=40, validation_documents=20), block_size=32, batch_size=4)
    scored = evaluate_run(
        str(project / "meta"), data, project / ".cache", None, adapt=AdaptConfig(steps=1, support_tokens=64)
    )
    assert {"ppl", "ppl_before", "adapt_steps"} <= set(scored)


def test_a_meta_learning_checkpoint_from_before_the_shared_step_loader_resumes():
    """Checkpoints written before the step loader moved to the run core name its position `episodes_done`."""
    from lmlab.runs.step_loader import StepLoader

    loader = StepLoader(list(range(10)), 2, lambda: 0)  # type: ignore[arg-type]
    loader.load_state_dict({"episodes_done": 4})
    assert [batch for batch in loader] == [[4, 5], [6, 7], [8, 9]]
