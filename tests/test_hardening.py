"""Hardening, round two (issue 28): stale data that looks fresh, records that lie, text silently changed, config that
escapes its guard, values that mean nothing, unbounded cost, faults that end in a traceback, paths that escape. Each
class is driven through the code the entry points run, with several variants each; see docs in the README's
bad-input and failure tables."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import torch
from mlflow.tracking import MlflowClient

from lmlab.child_env import child_environment
from lmlab.data.cache import PublishedMeanwhile, atomic_directory
from lmlab.data.config import DataConfig
from lmlab.data.datamodule import PretrainDataModule
from lmlab.data.file_sets import expand
from lmlab.data.text_files import inspect_text_file
from lmlab.data.token_cache import COMPLETE
from lmlab.data.tokenizer import MASK, SEP, special_tokens_read
from lmlab.errors import InputError
from lmlab.finetuning.run import finetune
from lmlab.hf.importing import read_weights
from lmlab.objectives.heldout import heldout_scores
from lmlab.pretraining.run import pretrain
from lmlab.rl.preferences import read_pairs as read_preferences
from lmlab.rl.prompts import PromptConfig, read_prompts
from lmlab.runs.checkpoints import AtomicCheckpointIO, CheckpointNotWritten
from lmlab.runs.export_dir import WEIGHTS_FILE, load_export, resolve
from lmlab.runs.hydra_guard import check_hydra_node, resolve_loaded
from lmlab.tasks.classification import Classification, read_classification
from lmlab.tasks.seq2seq import read_pairs
from lmlab.tasks.token_classification import read_tagged_jsonl
from lmlab.tracking.buffered import backend_unavailable
from lmlab.tracking.identity import git_state

from .conftest import ROOT, TINY, compose_checked, run_env

WORDS = "alpha bravo charlie delta echo foxtrot golf hotel india juliet kilo lima mike november oscar papa".split()


def _corpus(path: Path, words: list[str], documents: int = 60) -> None:
    lines = [" ".join(words[(i + j) % len(words)] for j in range(12)) for i in range(documents)]
    path.write_text("\n\n".join(lines) + "\n")


def _files_data(path: Path, **settings) -> DataConfig:
    cfg = DataConfig(source="files", files=[str(path)], block_size=16, batch_size=2, **settings)
    cfg.tokenizer.vocab_size = 200
    return cfg


# --------------------------------------------------------------------------- 1. stale data that looks fresh


def test_a_corpus_edited_with_its_mtime_kept_reaches_the_tokenizer_and_the_blocks(tmp_path):
    corpus = tmp_path / "corpus.txt"
    _corpus(corpus, WORDS)
    first = PretrainDataModule(_files_data(corpus), tmp_path / "cache", seed=0)
    first.prepare()
    stamp = corpus.stat()
    _corpus(corpus, [w.upper() + "x" for w in WORDS])  # new text, then the old mtime (cp -p, rsync -t, tar x)
    os.utime(corpus, ns=(stamp.st_atime_ns, stamp.st_mtime_ns))
    second = PretrainDataModule(_files_data(corpus), tmp_path / "cache", seed=0)
    tokenizer = second.prepare()
    assert second.corpus_fingerprint != first.corpus_fingerprint
    text = tokenizer.tokenizer.decode(second.blocks("train")[0].ids.tolist())
    assert "alphax" in text and "bravo " not in text  # the new text, through the new tokenizer, into the blocks


def test_resuming_after_the_corpus_changed_is_refused_not_continued_with_another_tokenizer(compose_config, project):
    corpus = project / "corpus.txt"
    _corpus(corpus, WORDS)
    overrides = [*TINY, "data=text", f"data.files=[{corpus}]", "data.tokenizer.vocab_size=200", "logger=none"]
    run_dir = project / "run"
    pretrain(compose_config(*overrides, "trainer.max_steps=4", "trainer.val_check_interval=2"), run_dir)
    _corpus(corpus, [w + "q" for w in WORDS])
    with pytest.raises(InputError, match="trained with another tokenizer .*tokenizer_fingerprint"):
        pretrain(
            compose_config(
                *overrides, "trainer.max_steps=8", "trainer.val_check_interval=2", "allow_config_change=true"
            ),
            run_dir,
        )


def test_pretrained_run_id_reads_the_run_as_it_is_now_and_refuses_an_unfinished_one(tmp_path):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    client = MlflowClient(uri)
    experiment = client.create_experiment("x", artifact_location=(tmp_path / "artifacts").as_uri())
    run_id = client.create_run(experiment).info.run_id
    with pytest.raises(InputError, match=f"MLflow run {run_id} is RUNNING: only a FINISHED run"):
        resolve(run_id, uri, tmp_path / "cache")
    assert not (tmp_path / "cache" / "mlflow-runs").exists() or not any((tmp_path / "cache" / "mlflow-runs").iterdir())
    weights = tmp_path / "export" / WEIGHTS_FILE
    weights.parent.mkdir()
    for version, end in ((b"first", 1000), (b"extended", 2000)):
        weights.write_bytes(version)
        client.update_run(run_id, status="RUNNING")
        client.log_artifact(run_id, str(weights))
        client.set_terminated(run_id, "FINISHED", end_time=end)
        assert (resolve(run_id, uri, tmp_path / "cache") / WEIGHTS_FILE).read_bytes() == version
    no_weights = client.create_run(experiment).info.run_id
    client.set_terminated(no_weights, "FINISHED")
    with pytest.raises(InputError, match="has no model.safetensors artifact"):
        resolve(no_weights, uri, tmp_path / "cache")


def test_an_extended_run_is_read_by_its_run_id_with_its_new_weights(compose_config, project):
    run_dir = project / "run"
    pretrain(compose_config(*TINY, "trainer.max_steps=4", "trainer.val_check_interval=2"), run_dir)
    run_id = json.loads((run_dir / "tracking.json").read_text())["run_id"]
    uri = f"sqlite:///{project}/mlflow.db"
    before = load_export(run_id, uri, project / ".cache")
    pretrain(
        compose_config(*TINY, "trainer.max_steps=8", "trainer.val_check_interval=2", "allow_config_change=true"),
        run_dir,
    )
    after = load_export(run_id, uri, project / ".cache")
    assert (before.global_step, after.global_step) == (4, 8)
    name = "backbone.token_embedding.weight"
    assert not torch.equal(before.weights[name], after.weights[name])


# ------------------------------------------------------------------------------------------ 2. records that lie


def test_an_evaluation_over_nothing_is_an_error_not_a_perfect_score(compose_config, project):
    with pytest.raises(InputError, match="gave objective clm no token to predict"):
        pretrain(compose_config(*TINY, "objective=clm", "data.block_size=1", "logger=none"), project / "run")
    with pytest.raises(InputError, match="found no token to score"):
        heldout_scores(None, None, None, [])  # type: ignore[arg-type]
    with pytest.raises(InputError, match="max_batches must be >= 0, got -1"):
        compose_checked("evaluate.py", ["run=x", "max_batches=-1"])


def test_the_same_finetune_command_twice_trains_once_and_again_when_its_data_changed(project, caplog):
    from .test_finetune import compose_finetune

    def write(path: Path, shift: int) -> None:
        rows = [f"{WORDS[(i + shift) % 16]} {WORDS[(i * 3) % 16]}\t{'pos' if i % 2 else 'neg'}" for i in range(24)]
        path.write_text("text\tlabel\n" + "\n".join(rows) + "\n")

    train, dev = project / "train.tsv", project / "dev.tsv"
    write(train, 0)
    write(dev, 5)
    task = ["task=text_classification", f"task.train_file={train}", f"task.validation_file={dev}", "task.max_length=16"]
    cfg = compose_finetune(*task, "pretrained=none", "trainer.max_steps=4", "trainer.val_check_interval=2")
    run_dir, client = project / "ft", MlflowClient(f"sqlite:///{project}/mlflow.db")
    first = finetune(cfg, run_dir)
    with caplog.at_level(logging.INFO):
        again = finetune(cfg, run_dir)
    assert again == pytest.approx(first) and "already finished with this config on these inputs" in caplog.text
    assert len(client.search_runs([e.experiment_id for e in client.search_experiments()])) == 1
    write(train, 3)  # the same command on an edited file is another job: it trains
    finetune(cfg, run_dir)
    assert len(client.search_runs([e.experiment_id for e in client.search_experiments()])) == 2


def test_two_exports_into_one_directory_cannot_both_succeed(tmp_path):
    final = tmp_path / "out"
    with pytest.raises(PublishedMeanwhile), atomic_directory(final, exclusive=True) as tmp:
        (tmp / "mine").write_text("mine")
        final.mkdir()  # another export published first
        (final / "theirs").write_text("theirs")
    assert [p.name for p in final.iterdir()] == ["theirs"]
    with atomic_directory(tmp_path / "cache-entry") as tmp:  # a cache entry: the same content either way
        (tmp / "x").write_text("x")


# --------------------------------------------------------------------------- 3. text silently changed or misread


@pytest.mark.parametrize(
    ("row", "phrase"),
    [
        ({"text": ["a", "b"], "label": "pos"}, "column 'text' holds a list, not text"),
        ({"text": {"a": 1}, "label": "pos"}, "column 'text' holds an object, not text"),
        ({"text": 3, "label": "pos"}, "column 'text' holds int 3, not text"),
        ({"text": "fine", "label": ["pos"]}, "column 'label' holds a list; a label is text or a whole number"),
        ({"text": "fine", "label": 0.5}, "column 'label' holds float 0.5"),
        ({"text": "fine", "label": True}, "column 'label' holds bool True"),
    ],
)
def test_a_task_field_that_is_not_text_is_refused_not_read_as_its_repr(tmp_path, row, phrase):
    path = tmp_path / "train.jsonl"
    path.write_text(json.dumps({"text": "ok", "label": "neg"}) + "\n" + json.dumps(row) + "\n")
    with pytest.raises(InputError, match=f"train.jsonl:2: {phrase}"):
        read_classification(path, "text", "label", None)


def test_whole_number_labels_are_read_and_other_json_kinds_refused_in_every_reader(tmp_path):
    path = tmp_path / "t.jsonl"
    path.write_text('{"text": "a", "label": 0}\n{"text": "b", "label": 1}\n')
    assert [e.label for e in read_classification(path, "text", "label", None)] == ["0", "1"]
    path.write_text('{"source": "a", "target": ["x"]}\n')
    with pytest.raises(InputError, match="column 'target' holds a list, not text"):
        read_pairs(path, "source", "target")
    path.write_text('{"tokens": ["a", 1], "tags": ["O", "O"]}\n')
    with pytest.raises(InputError, match="column 'tokens' holds a list that is not all strings"):
        read_tagged_jsonl(path, "tokens", "tags")


@pytest.mark.parametrize("labels", [["pos", "pos ", "neg"], ["Neg", "neg", "pos"], [" pos", "POS", "neg"]])
def test_labels_that_differ_only_by_whitespace_or_case_are_refused(tmp_path, labels):
    path = tmp_path / "train.tsv"
    path.write_text("text\tlabel\n" + "".join(f"text {i}\t{label}\n" for i, label in enumerate(labels)))
    examples = read_classification(path, "text", "label", None)
    with pytest.raises(InputError, match="differ only by surrounding whitespace or case"):
        Classification.label_set(examples)


def test_text_that_spells_a_special_token_is_text_in_the_corpus_and_tasks(tmp_path):
    corpus = tmp_path / "corpus.txt"
    lines = [f"{' '.join(WORDS[i % 7 : i % 7 + 6])} [SEP] then [MASK] and [SPAN0] end" for i in range(60)]
    corpus.write_text("\n\n".join(lines) + "\n")
    data = PretrainDataModule(_files_data(corpus), tmp_path / "cache", seed=0)
    tokenizer = data.prepare()
    specials = {tokenizer.token_id(t) for t in (SEP, MASK)}
    assert not specials & set(tokenizer.tokenizer.encode("then [MASK] and [SEP] end").ids)
    blocks = data.blocks("train")
    ids = [int(i) for b in range(len(blocks)) for i in blocks[b].ids[: blocks[b].n_real]]
    n_docs = data.splits["train"].stream.n_documents
    # [SEP] only where lmlab packs one between documents, never the text's own "[SEP]"; no [MASK] at all
    assert ids.count(tokenizer.token_id(SEP)) <= n_docs and tokenizer.token_id(MASK) not in ids
    with special_tokens_read(tokenizer.tokenizer):  # control input (a prompt's sentinels) reads them as tokens
        assert tokenizer.token_id(MASK) in tokenizer.tokenizer.encode("then [MASK]").ids
    assert tokenizer.token_id(MASK) not in tokenizer.tokenizer.encode("then [MASK]").ids


def test_prompt_and_preference_files_are_read_by_their_format_whatever_the_case_of_the_suffix(tmp_path):
    rows = [{"prompt": "alice works for", "answer": "acme"}, {"prompt": "bob\u2028works for", "answer": "initech"}]
    for name in ("p.json", "p.JSONL", "p.jsonl"):
        path = tmp_path / name
        path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
        prompts = read_prompts(PromptConfig(source="file", file=str(path)))
        assert [(p.text, p.answer) for p in prompts] == [("alice works for", "acme"), ("bob\u2028works for", "initech")]
    text = tmp_path / "p.txt"
    text.write_text("one prompt\u2028still the first\u0085and still\nsecond prompt\n")
    assert [p.text for p in read_prompts(PromptConfig(source="file", file=str(text)))] == [
        "one prompt\u2028still the first\u0085and still",
        "second prompt",
    ]
    with pytest.raises(InputError, match="is not a prompts format"):
        read_prompts(PromptConfig(source="file", file=str(tmp_path / "p.csv")))
    latin = tmp_path / "pairs.JSONL"
    latin.write_bytes(b'{"prompt": "caf\xe9", "chosen": "a", "rejected": "b"}\n')
    with pytest.raises(InputError, match=r"preferences: .*pairs.JSONL is not UTF-8 text: byte 15 \(line 1\)"):
        read_preferences(latin)
    latin.write_text(
        '{"prompt": "p\u2028q", "chosen": "a", "rejected": "b"}\n{"prompt": "r", "chosen": "c", "rejected": "d"}\n'
    )
    assert read_preferences(latin)[0].prompt == "p\u2028q"


# ----------------------------------------------------------------------------------- 4. config that escapes


ESCAPES = [
    ("hydra.job_logging.handlers.console.class=logging.os.open", "may use ['logging.StreamHandler'"),
    ("+hydra.job_logging.handlers.x.class=logging.handlers.RotatingFileHandler", "is not allowed"),
    ("+hydra.job_logging.handlers.x.class=logging.config.dictConfig", "is not allowed"),
    ("+hydra.job_logging.formatters.simple.class=logging.sys.modules", "is not allowed"),
    ("hydra.job_logging.handlers.console.stream=ext://os.system", "may refer to ['ext://sys.stdout'"),
    ("++hydra.job_logging.handlers.console.stream=cfg://handlers", "may refer to"),
    ("hydra.job_logging.handlers.file.filename=/tmp/anywhere.log", "inside the job's output directory"),
    ("hydra.job_logging.handlers.file.filename=${hydra:runtime.output_dir}/../../x.log", "inside the job's output"),
    ("+hydra.job.env_set.GIT_CONFIG_COUNT=1", "hydra.job.env_set.GIT_CONFIG_COUNT is not allowed"),
    ("+hydra.job.env_set.PYTHONPATH=/tmp", "hydra.job.env_set.PYTHONPATH is not allowed"),
    ("+hydra.job.env_set.LD_PRELOAD=/tmp/x.so", "hydra.job.env_set.LD_PRELOAD is not allowed"),
    ("+hydra.job.env_set.PATH=/tmp", "hydra.job.env_set.PATH is not allowed"),
    ("+model._target_=torch.hub.load", "lmlab instantiates nothing from a run config"),
    ("+logger.tags._target_=lmlab.runs.x", "lmlab instantiates nothing from a run config"),
]


@pytest.mark.parametrize("script", ["train.py", "finetune.py", "study.py", "rl.py"])
@pytest.mark.parametrize(("override", "phrase"), ESCAPES)
def test_no_config_node_reaches_an_object_or_command_outside_its_allowlist(project, script, override, phrase):
    if script != "train.py" and override.startswith("+model."):
        override = "+logger.tags._target_=os.system"
        phrase = "lmlab instantiates nothing"
    with pytest.raises(InputError, match=__import__("re").escape(phrase)):
        compose_checked(script, [override])


def test_names_are_checked_by_what_they_resolve_to_and_safe_settings_pass(project):
    assert (
        resolve_loaded("logging.os.open") is os.open
        and resolve_loaded("logging.StreamHandler") is logging.StreamHandler
    )
    assert resolve_loaded("no_such_module_loaded.x") is None  # resolving never imports
    with pytest.raises(InputError, match="factories or set attributes"):  # a preset's `.`: attributes set after
        check_hydra_node({"job_logging": {"handlers": {"f": {".": {"baseFilename": "/etc/x"}}}}})
    for ok in ("+hydra.job.env_set.OMP_NUM_THREADS=1", "+hydra.job.env_set.NCCL_DEBUG=INFO"):
        compose_checked("train.py", [ok])
    check_hydra_node({"job_logging": {"handlers": {"f": {"class": "logging.FileHandler", "mode": "a",
                      "filename": "${hydra.runtime.output_dir}/${hydra.job.name}.log"}}}})  # fmt: skip


def test_a_logging_escape_is_refused_by_the_entry_point_before_anything_is_written(tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    done = subprocess.run(
        [sys.executable, "train.py", "hydra.job_logging.handlers.console.class=logging.os.open",
         f"+hydra.job_logging.handlers.console.path={victim}"],  # fmt: skip
        cwd=ROOT, env=run_env(tmp_path), capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode != 0 and "is not allowed" in done.stderr and "Traceback" not in done.stderr
    assert victim.read_text() == "keep me" and not (tmp_path / "outputs").exists()


def test_lmlabs_git_call_ignores_the_git_variables_a_job_may_carry(tmp_path, monkeypatch):
    marker = tmp_path / "ran"
    exploit = {
        "GIT_CONFIG_COUNT": "1",
        "GIT_CONFIG_KEY_0": "core.fsmonitor",
        "GIT_CONFIG_VALUE_0": f"touch {marker}; false",
    }
    # The variables do run a command through git (so the check below can fail) ...
    subprocess.run(["git", "status", "--porcelain"], cwd=ROOT, env={**os.environ, **exploit}, capture_output=True)
    assert marker.exists()
    marker.unlink()
    # ... but not through lmlab's call, nor in the environment a study's jobs get.
    for key, value in exploit.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    assert git_state(ROOT)[0] != "unknown" and not marker.exists()
    env = child_environment()
    assert not any(k.startswith("GIT_") for k in env) and "PYTHONPATH" not in env and "HOME" in env


# --------------------------------------------------------------------------- 5. values that mean nothing


@pytest.mark.parametrize(
    ("script", "override"),
    [
        ("train.py", "optim.eps=inf"),
        ("train.py", "optim.lr=nan"),
        ("train.py", "optim.weight_decay=nan"),
        ("train.py", "optim.betas=[0.9,nan]"),
        ("train.py", "objective.mask_prob=nan"),
        ("finetune.py", "optim.weight_decay=-inf"),
        ("generate.py", "generation.temperature=nan"),
        ("generate.py", "generation.top_p=nan"),
        ("metalearn.py", "meta=reptile"),
        ("rl.py", "rl.kl_coef=nan"),
        ("study.py", "optim.lr=inf"),
    ],
)
def test_every_numeric_setting_must_be_finite(project, script, override):
    overrides = {
        "generate.py": ["run=x", "prompt=x"],
        "rl.py": ["policy=x"],
        "study.py": ["study.tasks=[{name: topic, task: synthetic_topic}]"],
    }.get(script, [])
    if override == "meta=reptile":
        overrides.append("meta.inner_lr=nan")
    with pytest.raises(InputError, match="is not a finite number"):
        compose_checked(script, [*overrides, override])


# ----------------------------------------------------------------------------- 6. unbounded cost and hangs


def test_a_glob_over_a_directory_link_loop_is_refused_instead_of_walked_forever(tmp_path):
    (tmp_path / "a" / "b").mkdir(parents=True)
    (tmp_path / "a" / "x.txt").write_text("x")
    (tmp_path / "a" / "b" / "up").symlink_to(tmp_path / "a")
    outcome: list[BaseException | list] = []
    worker = threading.Thread(target=lambda: outcome.append(_try(expand, [str(tmp_path / "**" / "*.txt")])))
    worker.start()
    worker.join(60)  # a hang fails here; the refusal takes milliseconds
    assert not worker.is_alive() and isinstance(outcome[0], InputError), outcome
    assert "reaches the directory" in str(outcome[0]) and "a link" in str(outcome[0])
    (tmp_path / "a" / "b" / "up").unlink()
    (tmp_path / "a" / "b" / "y.txt").symlink_to(tmp_path / "a" / "x.txt")
    with pytest.raises(InputError, match=r"2 times \(links to one file"):
        expand([str(tmp_path / "**" / "*.txt")])


def _try(fn, *args):
    try:
        return fn(*args)
    except BaseException as err:  # noqa: BLE001 - handed to the test thread
        return err


def test_a_glob_follows_directory_links_and_keeps_globs_rules(tmp_path):
    (tmp_path / "data" / "sub").mkdir(parents=True)
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "e.txt").write_text("e")
    (tmp_path / "data" / "linked").symlink_to(tmp_path / "elsewhere")
    (tmp_path / "data" / "sub" / "s.txt").write_text("s")
    (tmp_path / "data" / ".hidden.txt").write_text("h")
    (tmp_path / "data" / "top.txt").write_text("t")
    names = [p.name for p in expand([str(tmp_path / "data" / "**" / "*.txt")])]
    assert sorted(names) == ["e.txt", "s.txt", "top.txt"]
    assert [p.name for p in expand([str(tmp_path / "data" / "*.txt")])] == ["top.txt"]
    assert [p.name for p in expand([str(tmp_path / "data" / ".*.txt")])] == [".hidden.txt"]


def test_a_corpus_of_many_files_is_read_in_one_pass_without_a_cache_per_file(tmp_path):
    for i in range(300):
        (tmp_path / "docs").mkdir(exist_ok=True)
        (tmp_path / "docs" / f"{i:04d}.txt").write_text(f"{' '.join(WORDS[i % 9 : i % 9 + 7])}\n")
    cfg = DataConfig(source="files", files=[str(tmp_path / "docs" / "*.txt")], block_size=8, batch_size=2)
    cfg.tokenizer.vocab_size = 100
    data = PretrainDataModule(cfg, tmp_path / "cache", seed=0)
    data.prepare()
    assert data.splits["train"].stream.n_documents + data.splits["validation"].stream.n_documents == 300
    assert not (tmp_path / "cache" / "hf").exists()  # no `datasets` cache was built, per file or at all


def test_a_batch_larger_than_the_training_split_is_refused_before_anything_is_allocated(compose_config, project):
    with pytest.raises(InputError, match=r"data.batch_size=100000 is larger than the training split: .* GiB"):
        pretrain(compose_config(*TINY, "data.batch_size=100000"), project / "run")
    assert not (project / "mlflow.db").exists() or not MlflowClient(f"sqlite:///{project}/mlflow.db").search_runs(["0"])


# ----------------------------------------------------------------- 7. faults that end in a traceback or mislead


def test_a_locked_sqlite_store_is_an_outage_to_wait_for():
    from mlflow.exceptions import MlflowException
    from mlflow.protos.databricks_pb2 import RESOURCE_DOES_NOT_EXIST

    locked = MlflowException("(sqlite3.OperationalError) database is locked\n[SQL: SELECT experiments...]")
    assert backend_unavailable(locked)
    assert not backend_unavailable(MlflowException("run 'x' not found", error_code=RESOURCE_DOES_NOT_EXIST))


def test_a_checkpoint_write_that_fails_names_the_cause_and_leaves_no_half_file(tmp_path, monkeypatch):
    path = tmp_path / "last.ckpt"
    path.write_bytes(b"previous")

    def full_disk(obj, f):
        f.write(b"x" * 4096)
        raise RuntimeError("[enforce fail at inline_container.cc:626] . PytorchStreamWriter failed writing file data/0")

    monkeypatch.setattr(torch, "save", full_disk)
    with pytest.raises(CheckpointNotWritten, match="could not be written after 0.0 MiB .*PytorchStreamWriter failed"):
        AtomicCheckpointIO().save_checkpoint({"state_dict": {}}, path)
    assert path.read_bytes() == b"previous" and sorted(p.name for p in tmp_path.iterdir()) == ["last.ckpt"]


def test_an_unreadable_complete_marker_is_checked_again_not_crashed_on(tmp_path):
    corpus = tmp_path / "corpus.txt"
    _corpus(corpus, WORDS)
    data = PretrainDataModule(_files_data(corpus), tmp_path / "cache", seed=0)
    data.prepare()
    for marker in (tmp_path / "cache" / "tokens").glob(f"*/{COMPLETE}"):
        marker.write_text('{"split": "tr')  # truncated by a full disk
    again = PretrainDataModule(_files_data(corpus), tmp_path / "cache", seed=0)
    again.prepare()
    assert again.splits["train"].stream.n_tokens == data.splits["train"].stream.n_tokens
    assert all(
        json.loads(m.read_text())["n_shards"] >= 1 for m in (tmp_path / "cache" / "tokens").glob(f"*/{COMPLETE}")
    )


def test_messages_say_what_is_really_wrong(project, tmp_path):
    cr = tmp_path / "mac.txt"
    cr.write_bytes(b"line one\rline two\r" * 100_000)  # > 1 MiB: the old message said "one long line"
    with pytest.raises(InputError, match="ends its lines with a carriage return alone"):
        inspect_text_file(cr, "data.files")
    from lmlab.generation import _check_length

    with pytest.raises(InputError, match="the prompt is 1200 tokens, which leaves no room"):
        _check_length("decoder", 1200, 40, 128)
    with pytest.raises(InputError, match=r"study.tasks\[0\].name='a/b'"):
        compose_checked("study.py", ["study.tasks=[{name: a/b, task: synthetic_topic_snippets}]"])


def test_export_out_naming_a_file_is_refused(tmp_path, tokenizer):
    from lmlab.models import Backbone, ModelConfig
    from lmlab.publishing.run import ExportConfig, export
    from lmlab.runs.export_dir import write_export

    backbone = Backbone(ModelConfig(n_layers=1, d_model=16, n_heads=2, d_ff=32, vocab_size=tokenizer.vocab_size))
    metadata = {"objective": json.dumps({"name": "mlm"}), "global_step": "1"}
    run = write_export(
        tmp_path / "run", torch.nn.ModuleDict({"backbone": backbone}), backbone.cfg, tokenizer, metadata, {}
    )
    (tmp_path / "file").write_text("x")
    with pytest.raises(InputError, match="is a file, not a directory"):
        export(ExportConfig(run=str(run), out=str(tmp_path / "file")))
    assert (tmp_path / "file").read_text() == "x"


# -------------------------------------------------------------------------------------- 9. paths that escape


@pytest.mark.parametrize("shard", ["../outside.safetensors", "/etc/passwd", "sub/x.safetensors", ".."])
def test_an_hf_index_may_name_only_files_beside_it(tmp_path, shard):
    from safetensors.torch import save_file

    model = tmp_path / "model"
    model.mkdir()
    save_file({"w": torch.zeros(1)}, str(tmp_path / "outside.safetensors"))
    (model / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {"w": shard}}))
    with pytest.raises(InputError, match="names shard files outside its directory"):
        read_weights(model)
