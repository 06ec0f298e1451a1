"""Fine-tuning end to end: from a pretraining run (lineage in MLflow) or from scratch, on synthetic, local-file
and saved hub tasks; mismatched tokenizers and weights are refused."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from mlflow.tracking import MlflowClient

from lmlab.finetuning.config import register_finetune_configs
from lmlab.finetuning.run import finetune
from lmlab.pretraining.run import pretrain

from .conftest import CONF, TINY, _link_experiments

register_finetune_configs()

SMALL_MODEL = ["model.n_layers=2", "model.d_model=64", "model.n_heads=4", "model.d_ff=128", "model.init_std=0.125"]
SMALL_DATA = ["data.world.train_documents=300", "data.world.validation_documents=40", "data.tokenizer.vocab_size=700"]
QUICK = [
    "trainer.max_steps=60",
    "trainer.val_check_interval=30",
    "trainer.enable_progress_bar=false",
    "trainer.log_every_n_steps=5",
    "optim.lr=2e-3",
    "task.batch_size=16",
]


def compose_finetune(*overrides: str):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose("finetune", overrides=[*SMALL_MODEL, *SMALL_DATA, *QUICK, *overrides])


@pytest.fixture(scope="module")
def pretrained_run(tmp_path_factory) -> Path:
    """A short MLM pretraining run of the small architecture, tracked in MLflow."""
    root = tmp_path_factory.mktemp("pretrain")
    mp = pytest.MonkeyPatch()
    mp.setenv("LMLAB_ROOT", str(root))
    _link_experiments(root)
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("config", overrides=[*TINY, *SMALL_MODEL, "trainer.max_steps=30"])
    pretrain(cfg, root / "run")
    mp.undo()
    return root / "run"


def _synthetic(n_train: int = 300, n_val: int = 100) -> list[str]:
    return [f"task.train_examples={n_train}", f"task.validation_examples={n_val}", "task.max_length=96"]


def test_finetune_from_a_pretrained_run_records_lineage(pretrained_run, project):
    pretrained_id = json.loads((pretrained_run / "tracking.json").read_text())["run_id"]
    cfg = compose_finetune("task=synthetic_topic", f"pretrained={pretrained_run}", *_synthetic())
    metrics = finetune(cfg, project / "ft")
    assert metrics["val/acc"] > 0.2
    client = MlflowClient(f"sqlite:///{project}/mlflow.db")
    [run] = client.search_runs([client.get_experiment_by_name("lmlab").experiment_id])
    tags = run.data.tags
    assert tags["lmlab.pretrained_run_id"] == pretrained_id
    assert tags["lmlab.pretrained_objective"] == "mlm" and tags["lmlab.pretrained_step"] == "30"
    assert tags["lmlab.task"] == "synthetic_topic" and tags["lmlab.kind"] == "finetune"
    assert json.loads(tags["lmlab.labels"]) == ["arts", "business", "politics", "science", "sports"]
    assert {"val/acc", "val/f1", "val/mcc", "val/loss"} <= set(run.data.metrics)
    assert {a.path for a in client.list_artifacts(run.info.run_id)} >= {"labels.json", "model.safetensors"}
    steps = [m.step for m in client.get_metric_history(run.info.run_id, "val/acc")]
    assert steps[0] == 0 and steps[-1] == 60  # the final validation, after 60 steps


def test_classification_learns_from_scratch(project):
    metrics = finetune(
        compose_finetune(
            "task=synthetic_topic", "pretrained=none", "logger=csv", "trainer.max_steps=150", *_synthetic(600)
        ),
        project / "ft",
    )
    assert metrics["val/acc"] > 0.5, metrics  # 5 topics: chance is 0.2


def test_ner_learns_entities(project):
    metrics = finetune(
        compose_finetune("task=synthetic_ner", "pretrained=none", "logger=csv", "trainer.max_steps=150", *_synthetic()),
        project / "ft",
    )
    assert metrics["val/f1"] > 0.5, metrics


def test_local_tsv_classification_and_conll_ner_run_end_to_end(project):
    rows = ["text\tlabel"] + [f"the {w} was {a}\t{a}" for w in ("film", "play", "book") for a in ("good", "bad")] * 4
    for split in ("train", "dev"):
        (project / f"{split}.tsv").write_text("\n".join(rows) + "\n")
    tsv = [f"task.train_file={project / 'train.tsv'}", f"task.validation_file={project / 'dev.tsv'}"]
    metrics = finetune(compose_finetune("task=text_classification", "logger=csv", *tsv), project / "cls")
    assert "val/acc" in metrics
    sentence = "Anna B-PER\nKarl I-PER\nvisited O\nRome B-LOC\n. O\n"
    for split in ("train", "dev"):
        (project / f"{split}.conll").write_text("-DOCSTART- O\n\n" + (sentence + "\n") * 12)
    conll = [f"task.train_file={project / 'train.conll'}", f"task.validation_file={project / 'dev.conll'}"]
    metrics = finetune(compose_finetune("task=conll_ner", "logger=csv", *conll), project / "ner")
    assert metrics["val/f1"] > 0.5
    assert json.loads((project / "ner" / "export" / "labels.json").read_text()) == [
        "O",
        "B-LOC",
        "I-LOC",
        "B-PER",
        "I-PER",
    ]


def test_hub_task_loads_a_saved_dataset_with_class_names(project):
    import datasets

    features = datasets.Features(
        {"sentence": datasets.Value("string"), "label": datasets.ClassLabel(names=["negative", "positive"])}
    )
    rows = {"sentence": ["a fine film", "a dull film"] * 20, "label": [1, 0] * 20}
    split = datasets.Dataset.from_dict(rows, features=features)
    datasets.DatasetDict({"train": split, "validation": split}).save_to_disk(str(project / "sst2"))
    cfg = compose_finetune("task=sst2", f"task.hub_path={project / 'sst2'}", "logger=mlflow")
    finetune(cfg, project / "ft")
    client = MlflowClient(f"sqlite:///{project}/mlflow.db")
    [run] = client.search_runs([client.get_experiment_by_name("lmlab").experiment_id])
    assert json.loads(run.data.tags["lmlab.labels"]) == ["negative", "positive"]


def test_a_different_tokenizer_is_refused(pretrained_run, project):
    other = project / "tokenizer.json"
    other.write_text((pretrained_run / "export" / "tokenizer.json").read_text().replace("[MASK]", "[MASQ]"))
    cfg = compose_finetune("task=synthetic_topic", f"pretrained={pretrained_run}", f"data.tokenizer.path={other}")
    with pytest.raises(ValueError, match=r"is not the tokenizer of pretrained=.*sha256"):
        finetune(cfg, project / "ft")


def test_a_tampered_export_is_refused_with_shapes(pretrained_run, tmp_path):
    import shutil

    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    from lmlab.runs.export_dir import load_export

    export = tmp_path / "export"
    shutil.copytree(pretrained_run / "export", export)
    with safe_open(str(export / "model.safetensors"), "pt") as f:
        metadata = f.metadata()
    weights = load_file(str(export / "model.safetensors"))
    weights["backbone.stack.final_norm.weight"] = weights["backbone.stack.final_norm.weight"][:10]
    save_file(weights, str(export / "model.safetensors"), metadata=metadata)
    with pytest.raises(ValueError, match=r"final_norm.weight: .* has \(10,\), the model expects \(64,\)"):
        load_export(str(export)).backbone()
    (export / "tokenizer.json").write_text((export / "tokenizer.json").read_text().replace("[MASK]", "[MASQ]"))
    with pytest.raises(ValueError, match="is not the tokenizer this run was trained with"):
        load_export(str(export))


def test_max_train_examples_limits_the_training_set(project, caplog):
    import logging

    caplog.set_level(logging.INFO)
    finetune(
        compose_finetune("task=synthetic_sentiment", "logger=csv", "task.max_train_examples=40", *_synthetic()),
        project / "ft",
    )
    assert "40 train / 100 validation examples, 2 labels" in caplog.text


def test_evaluate_reproduces_the_runs_validation_loss(pretrained_run, project):
    from lmlab.data.config import DataConfig
    from lmlab.pretraining.evaluate import evaluate_run

    data = DataConfig(block_size=32, batch_size=16)
    data.world.train_documents, data.world.validation_documents = 300, 40
    metrics = evaluate_run(str(pretrained_run), data, project / ".cache", None, max_batches=4)
    client = MlflowClient(f"sqlite:///{pretrained_run.parent}/mlflow.db")
    run_id = json.loads((pretrained_run / "tracking.json").read_text())["run_id"]
    assert metrics["loss"] == pytest.approx(client.get_run(run_id).data.metrics["val/loss"], rel=1e-4)
    assert metrics["ppl"] == pytest.approx(2.718281828 ** metrics["loss"], rel=1e-4)
    assert metrics["tokens"] == 4 * 16 * 32
    cached = [json.loads(m.read_text())["split"] for m in (project / ".cache" / "tokens").glob("*/complete.json")]
    assert cached == ["validation"]  # evaluation never tokenizes the training split


def test_evaluate_py_prints_perplexity(pretrained_run):
    import subprocess
    import sys

    from .conftest import ROOT, run_env

    root = pretrained_run.parent
    cmd = [sys.executable, "evaluate.py", f"run={pretrained_run}", *[o for o in TINY if o.startswith("data.")]]
    done = subprocess.run(
        cmd + ["max_batches=2"], cwd=ROOT, env=run_env(root), capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "ppl=" in done.stdout.splitlines()[-1]


def test_extractive_qa_learns_from_scratch(project):
    metrics = finetune(
        compose_finetune(
            "task=synthetic_qa", "pretrained=none", "logger=csv", "trainer.max_steps=150", *_synthetic(300, 40)
        ),
        project / "ft",
    )
    # Chance (a random span of the context) is far below; across seeds 0-2, 150 steps reach F1 0.32-0.52.
    assert metrics["val/f1"] > 0.25 and metrics["val/em"] > 0.2


def test_seq2seq_learns_headlines_on_an_encoder_decoder(project):
    cfg = compose_finetune(
        "task=synthetic_headline",
        "pretrained=none",
        "model.layout=encoder_decoder",
        "logger=csv",
        "trainer.max_steps=300",
        "trainer.val_check_interval=300",
        *_synthetic(400, 30),
    )
    metrics = finetune(cfg, project / "ft")
    with open(next((project / "ft" / "csv").glob("*/metrics.csv"))) as f:
        first = next(row for row in csv.DictReader(f) if row.get("val/rougeL"))
    # The untrained model writes nothing like a headline; 300 steps from scratch learn its form and part of its
    # content (a pretrained span run does better: see the README's fine-tuning section).
    assert float(first["val/rougeL"]) < 0.05 and metrics["val/rougeL"] > 0.25 and metrics["val/rouge1"] > 0.25


@pytest.fixture(scope="module", params=["clm", "prefix_lm", "span"])
def generative_run(request, tmp_path_factory) -> tuple[str, Path]:
    """A 10-step pretraining run of each generative layout: decoder, prefix-LM, encoder-decoder."""
    root = tmp_path_factory.mktemp(request.param)
    mp = pytest.MonkeyPatch()
    mp.setenv("LMLAB_ROOT", str(root))
    _link_experiments(root)
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("config", overrides=[*TINY, *SMALL_MODEL, f"objective={request.param}", "trainer.max_steps=10"])
    pretrain(cfg, root / "run")
    mp.undo()
    return request.param, root / "run"


@pytest.mark.parametrize(
    "task", ["synthetic_topic", "synthetic_ner", "synthetic_qa", "synthetic_headline", "synthetic_person_topic"]
)
def test_every_family_runs_from_a_decoder_prefix_lm_and_encoder_decoder_run(generative_run, task, project):
    objective, run_dir = generative_run
    cfg = compose_finetune(
        f"task={task}",
        f"pretrained={run_dir}",
        "trainer.max_steps=4",
        "trainer.val_check_interval=4",
        *_synthetic(40, 8),
    )
    metrics = finetune(cfg, project / "ft")
    client = MlflowClient(f"sqlite:///{project}/mlflow.db")
    [run] = client.search_runs([client.get_experiment_by_name("lmlab").experiment_id])
    main = run.data.tags["lmlab.main_metric"]
    assert f"val/{main}" in metrics and run.data.metrics[f"val/{main}"] == pytest.approx(metrics[f"val/{main}"])
    assert run.data.tags["lmlab.pretrained_objective"] == objective


def test_an_unknown_main_metric_is_refused_before_training(project):
    cfg = compose_finetune("task=synthetic_topic", "pretrained=none", "task.main_metric=bleu", *_synthetic(40, 8))
    with pytest.raises(ValueError, match=r"task.main_metric='bleu' is not a metric of classification; it reports \["):
        finetune(cfg, project / "ft")


def test_evaluate_after_adaptation_scores_the_query_before_and_after_a_few_steps_on_the_support(
    pretrained_run, project
):
    """A new 'domain' (one synthetic document, repeated): a few steps on the first batch of its validation text (the
    support) lower the loss on the batches after it (the query); the support is never scored; evaluation without
    adaptation is unchanged; more support than text is refused. (lr 0.1 sometimes overshoots on the 30-step
    fixture, whose weights vary from run to run; 10 steps at 0.03 lower the query loss by about 0.3.)"""
    from lmlab.data.config import DataConfig
    from lmlab.data.synthetic import World
    from lmlab.errors import InputError
    from lmlab.pretraining.evaluate import AdaptConfig, evaluate_run

    domain = project / "domain.txt"
    domain.write_text("\n\n".join([World(99).document(0).text] * 600) + "\n")
    data = DataConfig(name="text", source="files", files=[str(domain)], block_size=32, batch_size=16)
    plain = evaluate_run(str(pretrained_run), data, project / ".cache", None, max_batches=4)
    adapted = evaluate_run(
        str(pretrained_run), data, project / ".cache", None, max_batches=4, adapt=AdaptConfig(10, 512, 0.03)
    )
    assert adapted["support_tokens"] == 512 and adapted["tokens"] == 3 * 512  # batch 1 adapts, batches 2-4 score
    assert plain["tokens"] == 4 * 512
    assert adapted["loss"] < adapted["loss_before"] - 0.1
    with pytest.raises(InputError, match="adapt.support_tokens=4096: the evaluated validation text has 2048 tokens"):
        evaluate_run(str(pretrained_run), data, project / ".cache", None, max_batches=4, adapt=AdaptConfig(1, 4096))
