"""Messy inputs through the real entry points: each is used exactly as meant, or refused with a message that names
the input, before anything is written (no output dir, no MLflow store, no traceback)."""

from __future__ import annotations

import logging
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from mlflow.tracking import MlflowClient

from lmlab.config_schema import parse
from lmlab.data.config import DataConfig
from lmlab.data.corpus import build_corpus
from lmlab.errors import InputError, MissingInputFile
from lmlab.generation import GenerationConfig, generate
from lmlab.models import Backbone, ModelConfig
from lmlab.pretraining.config import TrainConfig
from lmlab.pretraining.run import pretrain
from lmlab.runs.config import job_dirname
from lmlab.runs.export_dir import WEIGHTS_FILE, resolve
from lmlab.runs.job_lock import LOCK_FILE, JobDirInUse, job_lock
from lmlab.tasks.classification import Classification, read_classification
from lmlab.tasks.examples import TextExample
from lmlab.tasks.extractive_qa import ExtractiveQAConfig, read_squad
from lmlab.tasks.seq2seq import read_pairs
from lmlab.tasks.token_classification import read_conll
from lmlab.tracking.mlflow_run import check_sqlite_store

from .conftest import ROOT, TINY, compose_checked, run_env

# ---------------------------------------------------------------------------------------------- the entry points


def _run(script: str, root: Path, *overrides: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    cmd = [sys.executable, script, *overrides]
    return subprocess.run(cmd, cwd=ROOT, env=env or run_env(root), capture_output=True, text=True, timeout=300)


def _refused(done: subprocess.CompletedProcess, root: Path, *phrases: str) -> None:
    """A refusal: a non-zero exit, the phrases on stderr, no traceback, nothing written under the project root."""
    assert done.returncode != 0, done.stdout[-2000:]
    for phrase in phrases:
        assert phrase in done.stderr, done.stderr[-3000:]
    assert "Traceback" not in done.stderr, done.stderr[-3000:]
    assert not (root / "outputs").exists() or not any((root / "outputs").iterdir()), list(root.rglob("outputs/*"))
    assert not (root / "mlflow.db").exists()


@pytest.mark.parametrize(
    ("script", "override", "phrases"),
    [
        ("train.py", "+model.d_modl=64", ["model.d_modl is not a setting", "did you mean model.d_model?"]),
        ("train.py", "+objective.mask_prb=0.3", ["objective.mask_prb is not a setting", "objective.mask_prob"]),
        ("train.py", "+trainer.max_step=5", ["trainer.max_step is not a setting", "trainer.max_steps"]),
        ("train.py", "+seeds=1", ["seeds is not a setting", "did you mean seed?"]),
        ("train.py", "model.d_modl=64", ["Could not override 'model.d_modl'", "Key 'd_modl' not in 'ModelConfig'"]),
        ("train.py", "optim.lr=-0.001", ["optim.lr must be > 0, got -0.001"]),
        ("finetune.py", "optim.schedule=cosin", ["optim.schedule='cosin' is not supported", "'cosine'"]),
        ("finetune.py", "+task.label_colum=y", ["task.label_colum is not a setting", "task.label_column"]),
        ("evaluate.py", "+max_batch=2", ["max_batch is not a setting", "max_batches"]),
        ("generate.py", "+generation.top=5", ["generation.top is not a setting"]),
        ("generate.py", "generation.strategy=nucleus", ["strategy='nucleus' is not supported"]),
    ],
)
def test_a_misspelt_key_or_bad_value_is_refused_by_every_entry_point(project, script, override, phrases):
    extra = {"evaluate.py": ["run=x"], "generate.py": ["run=x", "prompt=hi"]}.get(script, [])
    with pytest.raises(Exception) as refused:  # InputError, or Hydra's own error for a key without `+`
        compose_checked(script, [override, *extra])
    message = str(refused.value) + str(refused.value.__cause__ or "")
    for phrase in phrases:
        assert phrase in message, message


@pytest.mark.parametrize(
    ("script", "override", "phrase"),
    [
        ("train.py", "+model.d_modl=64", "did you mean model.d_model?"),
        ("finetune.py", "optim.schedule=cosin", "optim.schedule='cosin' is not supported"),
        ("finetune.py", "trainer.strategy=fsdp", "trainer.strategy=fsdp shards pretraining runs (train.py) only"),
        ("evaluate.py", "+max_batch=2", "max_batch is not a setting"),
        ("generate.py", "generation.strategy=nucleus", "strategy='nucleus' is not supported"),
    ],
)
def test_each_entry_point_prints_a_refusal_as_its_message_and_writes_nothing(tmp_path, script, override, phrase):
    extra = {"evaluate.py": ["run=x"], "generate.py": ["run=x", "prompt=hi"]}.get(script, [])
    _refused(_run(script, tmp_path, override, *extra), tmp_path, phrase)


def test_a_bad_sweep_value_is_refused_before_its_job_dir_exists(tmp_path):
    """Each sweep job's config is checked when Hydra composes it; only the sweep's own multirun.yaml was written."""
    done = _run("train.py", tmp_path, "-m", "optim.lr=-1,-2", *TINY)
    assert done.returncode != 0 and "optim.lr must be > 0, got -1.0" in done.stderr and "Traceback" not in done.stderr
    files = [str(p.relative_to(tmp_path)) for p in tmp_path.rglob("outputs/**/*") if p.is_file()]
    assert files == ["outputs/default/multirun.yaml"]
    assert not (tmp_path / "mlflow.db").exists()


def test_hydra_full_error_shows_the_traceback_of_a_refusal(tmp_path):
    done = _run("train.py", tmp_path, "+model.d_modl=64", env={**run_env(tmp_path), "HYDRA_FULL_ERROR": "1"})
    assert done.returncode != 0 and "Traceback" in done.stderr and "model.d_modl is not a setting" in done.stderr


def test_a_password_in_a_uri_on_the_command_line_is_refused_without_echoing_it(tmp_path):
    done = _run("train.py", tmp_path, "logger.tracking_uri=postgresql://alice:s3cret@127.0.0.1:5433/mlflow")
    _refused(done, tmp_path, "logger.tracking_uri holds a URI with a password", "MLFLOW_TRACKING_PASSWORD")
    assert "s3cret" not in done.stderr + done.stdout


def test_a_hydra_callback_target_is_refused_before_hydra_instantiates_it(tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    overrides = [
        "+hydra.callbacks.evil._target_=builtins.open",
        f"+hydra.callbacks.evil.file={victim}",
        "+hydra.callbacks.evil.mode=w",
    ]
    _refused(_run("train.py", tmp_path, *overrides), tmp_path, "hydra.callbacks.evil._target_='builtins.open'")
    assert victim.read_text() == "precious"


@pytest.mark.parametrize(
    ("override", "phrase"),
    [
        ("+hydra.job_logging.handlers.file.mode=w", "mode='w' is not allowed"),
        ("hydra.job_logging.handlers.console.class=subprocess.Popen", "class='subprocess.Popen' is not allowed"),
    ],
)
def test_hydra_logging_configs_cannot_name_factories_or_truncate_files(project, override, phrase):
    with pytest.raises(InputError, match=re.escape(phrase)):
        compose_checked("train.py", [override])


def test_a_preset_cannot_bring_a_logging_factory(tmp_path):
    """A `()` key cannot be typed as an override; a preset YAML (+preset=NAME) can carry one."""
    preset = tmp_path / "experiments" / "preset" / "evil.yaml"
    preset.parent.mkdir(parents=True)
    preset.write_text(
        "# @package _global_\nhydra:\n  job_logging:\n    formatters:\n      simple:\n        (): os.system\n"
    )
    _refused(_run("train.py", tmp_path, "+preset=evil"), tmp_path, "hydra.job_logging.formatters.simple.()='os.system'")


@pytest.mark.parametrize(
    ("content", "phrase"),
    [
        (b"", "is empty"),
        (b" \n\t\r\n\n", "is empty"),
        (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "is not a text file"),
        ("caf\u00e9 au lait\n".encode("latin-1"), "is not UTF-8 text: byte 3 (line 1)"),
        (b"word " * 300_000, "line 1 is longer than 1,048,576 bytes"),
    ],
    ids=["empty", "whitespace", "binary", "latin-1", "long-line"],
)
def test_a_corpus_file_that_is_not_usable_text_is_refused_naming_it(tmp_path, content, phrase):
    corpus = tmp_path / "corpus.txt"
    corpus.write_bytes(content)
    with pytest.raises(InputError) as refused:
        build_corpus(DataConfig(source="files", files=[str(corpus)]), tmp_path / "hf")
    assert f"data.files: {corpus}" in str(refused.value) and phrase in str(refused.value)
    assert not (tmp_path / "hf").exists()


def test_train_py_refuses_a_binary_corpus_after_hydra_made_its_dir_and_removes_the_dir(tmp_path):
    corpus = tmp_path / "corpus.txt"
    corpus.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR")
    done = _run("train.py", tmp_path, "data=text", f"data.files=[{corpus}]", *TINY)
    _refused(done, tmp_path, f"data.files: {corpus} is not a text file")
    assert not (tmp_path / ".cache").exists() or not any((tmp_path / ".cache").rglob("tokens.bin"))


def test_a_job_dir_with_a_live_owner_is_refused_naming_it_and_then_continues(tmp_path):
    """The owner here is this test process (a barrier no timing can break); two real commands started together
    behave the same (measured in the README's failure table)."""
    overrides = [*TINY, "trainer.max_steps=4"]
    in_name = sorted(o for o in overrides if not o.startswith("trainer.enable_progress_bar="))  # an excluded key
    run_dir = tmp_path / "outputs" / "default" / job_dirname(",".join(in_name))
    with job_lock(run_dir):
        done = _run("train.py", tmp_path, *overrides)
        assert done.returncode != 0, done.stderr[-3000:]
        assert f"the job directory {run_dir} is in use by pid {os.getpid()} on " in done.stderr, done.stderr[-3000:]
        assert "Traceback" not in done.stderr
        assert not (tmp_path / "mlflow.db").exists() and (run_dir / ".hydra").is_dir()  # kept: not the refused's
    done = _run("train.py", tmp_path, *overrides)
    assert done.returncode == 0, done.stderr[-3000:]
    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    runs = client.search_runs([client.get_experiment_by_name("lmlab").experiment_id])
    assert [(r.info.status, r.data.tags["lmlab.run_dir"]) for r in runs] == [("FINISHED", str(run_dir))]


def test_an_unusable_tracking_store_is_refused_at_once_naming_it(tmp_path):
    (tmp_path / "mlflow.db").write_text("this is not a database\n")
    done = _run("train.py", tmp_path, *TINY)  # refused by the check, not after MLflow's minutes of retries:
    assert done.returncode != 0 and f"the tracking store {tmp_path / 'mlflow.db'}" in done.stderr
    assert "is not an SQLite database" in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "outputs").exists() or not any((tmp_path / "outputs").iterdir())


# ------------------------------------------------------------------------------------------------ files, in process


def test_a_tsv_field_starting_with_a_quote_is_text_not_quoting(tmp_path):
    path = tmp_path / "train.tsv"
    rows = ['"Quoted" at the start\tpos', 'a "middle" quote\tneg', '"unbalanced start\tpos', "plain\tneg"]
    path.write_bytes(("\ufefftext\tlabel\r\n" + "\r\n".join(rows) + "\r\n\r\n").encode())
    examples = read_classification(path, "text", "label", None)
    assert [(e.text, e.label) for e in examples] == [tuple(r.split("\t")) for r in rows]


def test_a_tsv_is_read_with_quote_rules_when_asked(tmp_path):
    path = tmp_path / "train.tsv"
    path.write_text('text\tlabel\n"tab\tinside"\tpos\n"two\nlines"\tneg\n')
    examples = read_classification(path, "text", "label", None, tsv_quoting=True)
    assert [(e.text, e.label) for e in examples] == [("tab\tinside", "pos"), ("two\nlines", "neg")]


def test_csv_follows_standard_quoting_and_says_when_rows_span_lines(tmp_path, caplog):
    path = tmp_path / "train.csv"
    path.write_text('text,label\n"a, b",pos\n"two\nlines",neg\nplain,pos\n', encoding="utf-8")
    with caplog.at_level(logging.INFO, logger="lmlab.tasks.readers"):
        examples = read_classification(path, "text", "label", None)
    assert [e.text for e in examples] == ["a, b", "two\nlines", "plain"]
    assert "3 rows from 4 non-blank lines" in caplog.text and f"{path}: 3 rows" in caplog.text


@pytest.mark.parametrize(
    ("content", "phrase"),
    [
        ("text\tlabel\nonly one column\n", "train.tsv:2: expected 2 columns"),
        ("text\tlabel\na\tb\tc\n", "train.tsv:2: expected 2 columns"),
        ("", "is empty"),
    ],
)
def test_a_malformed_tsv_is_refused_naming_file_and_line(tmp_path, content, phrase):
    path = tmp_path / "train.tsv"
    path.write_text(content)
    with pytest.raises(InputError, match=phrase):
        read_classification(path, "text", "label", None)


@pytest.mark.parametrize("reader", ["classification", "conll", "pairs", "squad"])
def test_every_task_reader_refuses_binary_and_non_utf8_files_naming_them(tmp_path, reader):
    suffix = {"classification": ".tsv", "conll": ".conll", "pairs": ".jsonl", "squad": ".json"}[reader]
    read = {
        "classification": lambda p: read_classification(p, "text", "label", None),
        "conll": lambda p: read_conll(p, 0, -1),
        "pairs": lambda p: read_pairs(p, "source", "target"),
        "squad": read_squad,
    }[reader]
    for content, phrase in [(b"\x00\x01\x02", "is not a text file"), (b"\xe9t\xe9\n", "is not UTF-8 text")]:
        path = tmp_path / f"data{suffix}"
        path.write_bytes(content)
        with pytest.raises(InputError, match=f"task data file: {path} {phrase}"):
            read(path)


def test_whitespace_only_lines_separate_paragraphs(tmp_path):
    path = tmp_path / "wiki.txt"
    path.write_text(" = Title = \n \nFirst paragraph,\nstill first.\n \t \nSecond paragraph.\n   \n\nThird.\n")
    cfg = DataConfig(source="files", files=[str(path)], documents="paragraph", validation_fraction=0.4)
    corpus = build_corpus(cfg, tmp_path / "hf")
    assert list(corpus.documents("train")) == ["= Title =", "Second paragraph."]
    assert list(corpus.documents("validation")) == ["First paragraph,\nstill first.", "Third."]


def test_a_bom_and_crlf_do_not_reach_the_documents(tmp_path):
    path = tmp_path / "crlf.txt"
    path.write_bytes("\ufeffone\r\n\r\ntwo\r\nlines\r\n".encode())
    cfg = DataConfig(source="files", files=[str(path)], documents="paragraph", validation_fraction=0.49)
    corpus = build_corpus(cfg, tmp_path / "hf")
    assert list(corpus.documents("train")) == ["one"] and list(corpus.documents("validation")) == ["two\nlines"]


def test_a_one_class_label_column_is_refused_before_training():
    with pytest.raises(InputError, match=r"1 distinct label\(s\) \['pos'\].*task.label_column"):
        Classification.label_set([TextExample("a", "pos"), TextExample("b", "pos")])


# ------------------------------------------------------------------------------------------- configs and stores


@pytest.mark.parametrize(
    ("override", "phrase"),
    [
        ("optim.betas=[0.9,1.5]", "optim.betas must be two numbers in [0, 1)"),
        ("optim.warmup_steps=-1", "optim.warmup_steps must be >= 0"),
        ("trainer.val_check_interval=0", "trainer.val_check_interval must be >= 1"),
        ("trainer.limit_val_batches=1.5", "trainer.limit_val_batches=1.5"),
        ("data.block_size=4096", "data.block_size=4096 exceeds model.max_positions"),
        ("logger.kind=wandb", "logger.kind='wandb' is not supported"),
    ],
)
def test_values_are_validated_by_their_config(compose_config, override, phrase):
    with pytest.raises(InputError) as refused:
        parse(compose_config(override), TrainConfig)
    assert phrase in str(refused.value)


def test_a_sqlite_store_that_is_not_a_database_is_refused(tmp_path):
    db = tmp_path / "mlflow.db"
    db.write_bytes(b"garbage" * 10)
    with pytest.raises(InputError, match="is not an SQLite database"):
        check_sqlite_store(db)
    (tmp_path / "dir.db").mkdir()
    with pytest.raises(InputError, match="cannot be opened for reading and writing"):
        check_sqlite_store(tmp_path / "dir.db")


def test_a_checkpoint_path_that_is_not_a_directory_is_refused_before_the_run_is_recorded(compose_config, project):
    run_dir = project / "run"
    run_dir.mkdir()
    (run_dir / "checkpoints").write_text("a file")
    with pytest.raises(InputError, match="the checkpoint directory .* is not a writable directory"):
        pretrain(compose_config(*TINY), run_dir)
    assert not (project / "mlflow.db").exists() and sorted(p.name for p in run_dir.iterdir()) == ["checkpoints"]


def test_a_generation_longer_than_the_model_positions_is_refused_before_decoding():
    cfg = ModelConfig(layout="decoder", n_layers=1, d_model=16, n_heads=2, d_ff=32, max_positions=32, vocab_size=50)
    backbone = Backbone(cfg)
    prompt = torch.ones(1, 20, dtype=torch.long)
    with pytest.raises(InputError, match=r"prompt's 20 tokens \+ generation.max_new_tokens=20 = 40 positions.*<= 12"):
        generate(backbone, prompt, GenerationConfig(max_new_tokens=20))


# ------------------------------------------------------------------------------------------ ownership and debris


def test_a_dead_owners_lock_is_taken_over_and_a_live_one_refused(tmp_path):
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys,time; from pathlib import Path; from lmlab.runs.job_lock import job_lock\n"
            "with job_lock(Path(sys.argv[1])):\n    print('held', flush=True); time.sleep(60)",
            str(tmp_path),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout.readline().strip() == "held"
    with pytest.raises(JobDirInUse, match=f"in use by pid {holder.pid} on "), job_lock(tmp_path):
        pass
    holder.kill()
    holder.wait()
    with job_lock(tmp_path):
        assert (tmp_path / LOCK_FILE).read_text().startswith(f"pid {os.getpid()} ")


def test_a_run_id_is_downloaded_into_the_cache_not_a_temporary_dir(tmp_path, monkeypatch):
    temp = tmp_path / "tmp"
    temp.mkdir()
    monkeypatch.setattr("tempfile.tempdir", str(temp))
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    client = MlflowClient(uri)
    experiment = client.create_experiment("x", artifact_location=(tmp_path / "artifacts").as_uri())
    run_id = client.create_run(experiment).info.run_id
    weights = tmp_path / "export" / WEIGHTS_FILE
    weights.parent.mkdir()
    weights.write_bytes(b"weights")
    client.log_artifact(run_id, str(weights))
    client.set_terminated(run_id, "FINISHED")
    found = resolve(run_id, uri, tmp_path / "cache")
    end = client.get_run(run_id).info.end_time
    assert found == tmp_path / "cache" / "mlflow-runs" / f"{run_id}-finished{end}"
    assert (found / WEIGHTS_FILE).read_bytes() == b"weights"
    assert resolve(run_id, uri, tmp_path / "cache") == found  # reused
    assert sorted(temp.iterdir()) == []
    with pytest.raises(MissingInputFile, match="neither a run or export directory nor an MLflow run id"):
        resolve("not-a-run", uri, tmp_path / "cache")


# ---------------------------------------------------------------------------------------------------- siblings


def test_a_jsonl_corpus_row_without_text_is_refused_not_crashed_on(tmp_path):
    path = tmp_path / "corpus.jsonl"
    path.write_text('{"text": "one document"}\n{"text": null}\n{"text": "another"}\n')
    corpus = build_corpus(DataConfig(source="files", files=[str(path)], validation_fraction=0.4), tmp_path / "hf")
    for split in ("train", "validation"):  # refused on the first pass over the file, naming its line
        with pytest.raises(InputError, match=r"corpus.jsonl line 2 holds NoneType in column 'text', not text"):
            list(corpus.documents(split))


def test_model_or_data_overrides_with_a_pretrained_run_are_refused_not_ignored(tmp_path):
    done = _run("finetune.py", tmp_path, f"pretrained={tmp_path}/run", "model.n_layers=4", "data.block_size=64")
    _refused(done, tmp_path, "['model.n_layers=4', 'data.block_size=64'] would be ignored", "pretrained=none")


@pytest.mark.parametrize(
    ("override", "phrase"),
    [
        ("task.train_file=/nonexistent/train.tsv", "task.train_file: /nonexistent/train.tsv does not exist"),
        ("trainer.precision=fp8", "trainer.precision='fp8' is not supported"),
    ],
)
def test_finetune_refuses_missing_files_and_unknown_precisions_at_composition(tmp_path, override, phrase):
    task = ["task=text_classification", f"task.train_file={__file__}", f"task.validation_file={__file__}"]
    _refused(_run("finetune.py", tmp_path, *task, override), tmp_path, phrase)


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is there")
def test_a_gpu_trainer_without_a_gpu_is_refused_before_the_run_is_recorded(compose_config):
    with pytest.raises(InputError, match="trainer.accelerator=gpu but this machine has no CUDA GPU"):
        parse(compose_config("trainer=gpu"), TrainConfig)


def test_unanswerable_hub_questions_are_refused_not_dropped(tmp_path):
    import datasets

    from lmlab.tasks.sources import load_examples

    rows = {
        "question": ["who?", "where?"],
        "context": ["alice works", "nowhere"],
        "answers": [{"text": ["alice"], "answer_start": [0]}, {"text": [], "answer_start": []}],
    }
    split = datasets.Dataset.from_dict(rows)
    datasets.DatasetDict({"train": split, "validation": split}).save_to_disk(str(tmp_path / "qa"))
    cfg = ExtractiveQAConfig(source="hub", hub_path=str(tmp_path / "qa"))
    with pytest.raises(InputError, match="1 of 2 questions of a split have no answer"):
        load_examples(cfg, "train")
