"""The sharded token cache: shards read as one stream, parallel tokenization equal to one process', a limit that
tokenizes only the shards it needs, and a tokenization killed halfway that resumes at its first missing shard."""

from __future__ import annotations

import os
import pickle
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from lmlab.data import token_cache
from lmlab.data.blocks import ShardedStream, TokenStream
from lmlab.data.cache import building
from lmlab.data.config import DataConfig, TokenizeConfig, TokenizerConfig
from lmlab.data.corpus import build_corpus
from lmlab.data.datamodule import PretrainDataModule
from lmlab.data.token_cache import load_or_build
from lmlab.data.tokenizer import load_or_train_tokenizer
from lmlab.errors import InputError

from .conftest import ROOT

DOCUMENTS = 400


def _corpus(cache):
    cfg = DataConfig()
    cfg.world.train_documents, cfg.world.validation_documents = DOCUMENTS, 20
    return build_corpus(cfg, cache / "hf")


def _whole(cached: token_cache.TokenArray) -> tuple[np.ndarray, list[int], np.ndarray]:
    stream = cached.stream
    documents = [stream.document_start(i) for i in range(stream.n_documents)]
    return stream.slice(0, stream.n_tokens), documents, stream.sentences_between(0, stream.n_tokens)


def _assert_same(a: token_cache.TokenArray, b: token_cache.TokenArray) -> None:
    for x, y in zip(_whole(a), _whole(b), strict=True):
        assert np.array_equal(x, y)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The train split tokenized whole by one process in one shard, and the tokenizer."""
    cache = tmp_path_factory.mktemp("reference")
    corpus = _corpus(cache)
    tok = load_or_train_tokenizer(corpus, TokenizerConfig(vocab_size=500), cache)
    one = load_or_build(corpus, tok, "train", cache, TokenizeConfig(shard_documents=DOCUMENTS))
    assert one.stream.n_shards == 1
    return tok, one


def test_a_sharded_stream_reads_like_the_one_array_of_its_shards():
    tokens = np.arange(100, 130)
    documents, sentences = np.array([0, 4, 9, 20, 26]), np.array([0, 2, 4, 7, 9, 15, 20, 26, 28])
    cuts = [0, 9, 26, 30]  # shards end at document ends
    shards = [
        TokenStream(
            tokens[lo:hi],
            documents[(documents >= lo) & (documents < hi)] - lo,
            sentences[(sentences >= lo) & (sentences < hi)] - lo,
        )
        for lo, hi in zip(cuts, cuts[1:], strict=False)
    ]
    whole, sharded = TokenStream(tokens, documents, sentences), ShardedStream.of(shards, max_open=1)
    assert sharded.n_tokens == 30 and sharded.n_documents == 5
    for start, end in [(0, 30), (7, 12), (8, 27), (26, 40), (29, 30)]:
        assert np.array_equal(sharded.slice(start, end), whole.slice(start, end))
        assert np.array_equal(sharded.sentences_between(start, end), whole.sentences_between(start, end))
    for position in range(30):
        assert sharded.document_bounds(position) == whole.document_bounds(position)
        assert sharded.document_index(position) == whole.document_index(position)
    assert [sharded.document_start(i) for i in range(5)] == documents.tolist()


def test_two_processes_write_the_shards_one_process_writes_as_one_array(tmp_path, reference):
    tok, one = reference
    parallel = load_or_build(_corpus(tmp_path), tok, "train", tmp_path, TokenizeConfig(num_proc=2, shard_documents=30))
    assert parallel.stream.n_shards == 14  # 13 shards of 30 documents and one of 10
    _assert_same(parallel, one)
    assert (tmp_path / "tokens" / parallel.fingerprint / "complete.json").is_file()


def test_a_stream_of_many_shards_keeps_few_open_and_reads_them_all(tmp_path, reference):
    """400 shards (3 files each) read in random order with at most 8 open: the open files stay bounded (a cache
    of any size fits the process's file limit) and every shard reads as the one array does."""
    tok, one = reference
    many = load_or_build(_corpus(tmp_path), tok, "train", tmp_path, TokenizeConfig(shard_documents=1))
    stream = many.stream
    assert stream.n_shards == DOCUMENTS
    stream.max_open = 8
    before = len(os.listdir("/proc/self/fd"))
    whole, starts, _ = _whole(one)
    for k in np.random.default_rng(0).permutation(stream.n_shards):
        lo, hi = int(stream.bases[k]), int(stream.bases[k + 1])
        assert np.array_equal(stream.slice(lo, hi), whole[lo:hi])
        assert stream.document_start(int(k)) == starts[k]
        assert len(os.listdir("/proc/self/fd")) <= before + 3 * 8
    assert len(pickle.loads(pickle.dumps(stream))._open) == 0  # a loader worker opens its own


def test_a_limit_tokenizes_only_the_shards_it_needs_and_a_later_run_appends_the_rest(tmp_path, reference, monkeypatch):
    tok, one = reference
    written = []
    write = token_cache.write_shard
    monkeypatch.setattr(token_cache, "write_shard", lambda path, docs: written.append(path.name) or write(path, docs))
    corpus, settings = _corpus(tmp_path), TokenizeConfig(shard_documents=50)
    limited = load_or_build(corpus, tok, "train", tmp_path, settings, limit=one.n_tokens // 3)
    shard = limited.stream.shard(0).n_tokens
    assert one.n_tokens // 3 <= limited.n_tokens < one.n_tokens // 3 + 2 * shard
    assert written == [f"shard-{i:05d}" for i in range(limited.stream.n_shards)] and len(written) < 8
    assert np.array_equal(_whole(limited)[0], _whole(one)[0][: limited.n_tokens])
    written.clear()
    assert load_or_build(corpus, tok, "train", tmp_path, settings, limit=limited.n_tokens).n_tokens == limited.n_tokens
    assert written == []  # what the limit needs is in the cache
    whole = load_or_build(corpus, tok, "train", tmp_path, settings)
    assert written == [f"shard-{i:05d}" for i in range(limited.stream.n_shards, 8)]
    _assert_same(whole, one)


KILLED_BUILD = """
import sys, time
from dataclasses import replace
from pathlib import Path
from lmlab.data.config import DataConfig, TokenizeConfig, TokenizerConfig
from lmlab.data.corpus import build_corpus
from lmlab.data.token_cache import load_or_build
from lmlab.data.tokenizer import load_or_train_tokenizer

cache = Path(sys.argv[1])
cfg = DataConfig()
cfg.world.train_documents, cfg.world.validation_documents = {documents}, 20
corpus = build_corpus(cfg, cache / "hf")
tok = load_or_train_tokenizer(corpus, TokenizerConfig(vocab_size=500), cache)

def slow(split):
    for document in corpus.documents(split):
        time.sleep(0.02)  # a corpus read at 50 documents a second: the kill lands halfway
        yield document

load_or_build(replace(corpus, _documents=slow), tok, "train", cache, TokenizeConfig(num_proc=2, shard_documents=50))
"""


def test_a_tokenization_killed_halfway_resumes_without_retokenizing_its_finished_shards(
    tmp_path, reference, monkeypatch
):
    tok, one = reference
    script = tmp_path / "build.py"
    script.write_text(textwrap.dedent(KILLED_BUILD.format(documents=DOCUMENTS)))
    child = subprocess.Popen([sys.executable, str(script), str(tmp_path)], cwd=ROOT, start_new_session=True)
    deadline = time.monotonic() + 120
    while not len(list(tmp_path.glob("tokens/*/shard-*"))) >= 3 and child.poll() is None:
        assert time.monotonic() < deadline, "the child wrote no shards in 2 minutes"
        time.sleep(0.05)
    os.killpg(child.pid, signal.SIGKILL)
    child.wait()
    (entry,) = (tmp_path / "tokens").glob("[!.]*")  # the entry, not its lock file
    assert not (entry / "complete.json").exists(), "the child finished before it was killed"
    finished = sorted(p.name for p in entry.glob("shard-*"))
    unfinished = entry / ".shard-00005.k1ll3d"  # what a kill during a shard's write leaves (atomic_directory's)
    unfinished.mkdir()
    (unfinished / "tokens.bin").write_bytes(b"\0" * 1000)
    written = []
    write = token_cache.write_shard
    monkeypatch.setattr(token_cache, "write_shard", lambda path, docs: written.append(path.name) or write(path, docs))
    resumed = load_or_build(_corpus(tmp_path), tok, "train", tmp_path, TokenizeConfig(shard_documents=50))
    assert sorted(written + finished) == [f"shard-{i:05d}" for i in range(8)] and not set(written) & set(finished)
    _assert_same(resumed, one)
    assert not unfinished.exists() and not list(entry.glob(".*"))


WAITING_BUILD = """
import logging, sys
from pathlib import Path
from lmlab.data.config import DataConfig, TokenizeConfig, TokenizerConfig
from lmlab.data.corpus import build_corpus
from lmlab.data.token_cache import load_or_build
from lmlab.data.tokenizer import load_or_train_tokenizer

logging.basicConfig(level=logging.INFO, stream=sys.stdout, format="%(message)s")
cache = Path(sys.argv[1])
cfg = DataConfig()
cfg.world.train_documents, cfg.world.validation_documents = {documents}, 20
corpus = build_corpus(cfg, cache / "hf")
tok = load_or_train_tokenizer(corpus, TokenizerConfig(vocab_size=500), cache)
print("ready", flush=True)
load_or_build(corpus, tok, "train", cache, TokenizeConfig(shard_documents=50))
"""


def _waits_for_a_lock(pid: int) -> bool:
    """`pid` is blocked on a file lock (Linux lists blocked waiters in /proc/locks as "-> FLOCK ... <pid> ...")."""
    return any(
        line.split()[1] == "->" and str(pid) in line.split() for line in Path("/proc/locks").read_text().splitlines()
    )


def test_a_process_that_comes_to_build_an_entry_being_built_waits_and_then_reuses_it(tmp_path, reference):
    """Every rank of a multi-node job (and every job of a sweep) prepares its data on the same cache at once: one
    tokenizes, the others wait for it instead of tokenizing the corpus alongside."""
    tok, _ = reference
    built = load_or_build(_corpus(tmp_path / "a"), tok, "train", tmp_path / "a", TokenizeConfig(shard_documents=50))
    (done,) = (tmp_path / "a" / "tokens").glob("[!.]*")
    shared = tmp_path / "shared"
    script = tmp_path / "build.py"
    script.write_text(textwrap.dedent(WAITING_BUILD.format(documents=DOCUMENTS)))
    with building(shared / "tokens" / done.name):  # this process is the one building it
        child = subprocess.Popen(
            [sys.executable, str(script), str(shared)], cwd=ROOT, stdout=subprocess.PIPE, text=True
        )
        assert child.stdout is not None
        before = []  # its tokenizer is trained (and logged) first
        while (line := child.stdout.readline()) not in ("ready\n", ""):
            before.append(line)
        assert line == "ready\n", before
        deadline = time.monotonic() + 120
        while not _waits_for_a_lock(child.pid):  # a child that does not wait tokenizes instead, and this fails
            assert child.poll() is None and time.monotonic() < deadline, "the child never waited for the lock"
            time.sleep(0.05)
        shutil.copytree(done, shared / "tokens" / done.name)
    out, _ = child.communicate(timeout=120)
    assert child.returncode == 0, before
    assert "Reusing token cache" in out and "Tokenizing" not in out, out
    assert load_or_build(_corpus(shared), tok, "train", shared, TokenizeConfig(shard_documents=50)).n_tokens == (
        built.n_tokens
    )


def test_max_tokens_is_a_whole_number_and_caps_validation_in_proportion(tmp_path):
    cfg = DataConfig(max_tokens=20e9, validation_fraction=0.05)
    cfg.validate()
    assert cfg.token_limit("train") == 20_000_000_000 and cfg.token_limit("validation") == 1_052_631_579
    for bad in (0, 1.5):
        with pytest.raises(InputError, match=rf"data.max_tokens={bad}: expected a whole number of tokens >= 1"):
            DataConfig(max_tokens=bad).validate()
    with pytest.raises(InputError, match="data.tokenize.num_proc must be >= 1"):
        TokenizeConfig(num_proc=0).validate()


def test_a_run_with_max_tokens_trains_on_the_first_shards_that_hold_them(tmp_path):
    cfg = DataConfig(max_tokens=3000)
    cfg.world.train_documents, cfg.world.validation_documents = DOCUMENTS, 100
    cfg.tokenizer.vocab_size, cfg.tokenize.shard_documents = 500, 20
    data = PretrainDataModule(cfg, tmp_path, seed=0)
    data.prepare()
    train, validation = data.splits["train"], data.splits["validation"]
    assert 3000 <= train.n_tokens < 3000 + max(train.stream.shard(k).n_tokens for k in range(train.stream.n_shards))
    # 3000 * 0.05 / 0.95 = 158 tokens: the first shard of 20 validation documents holds them
    assert validation.n_tokens >= 158 and validation.stream.n_shards == 1 and validation.n_documents == 20
    assert train.n_documents < DOCUMENTS
