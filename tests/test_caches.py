"""Tokenizer and token-cache reuse, invalidation, atomicity and corruption handling."""

from __future__ import annotations

import errno
import fcntl
import logging
from dataclasses import replace

import numpy as np
import pytest

from lmlab.data import token_cache
from lmlab.data.cache import building
from lmlab.data.config import DataConfig, TokenizeConfig, TokenizerConfig
from lmlab.data.corpus import build_corpus
from lmlab.data.token_cache import load_or_build
from lmlab.data.tokenizer import SPECIAL_TOKENS, load_or_train_tokenizer


def _corpus(tmp_path, seed: int = 0):
    cfg = DataConfig()
    cfg.world.seed = seed
    cfg.world.train_documents, cfg.world.validation_documents = 120, 10
    return build_corpus(cfg, tmp_path / "hf")


TOK = TokenizerConfig(vocab_size=400)


def _tokens(cached: token_cache.TokenArray) -> np.ndarray:
    return cached.stream.slice(0, cached.n_tokens)


def test_tokenizer_is_trained_once_and_reused(tmp_path, caplog):
    caplog.set_level(logging.INFO)
    corpus = _corpus(tmp_path)
    first = load_or_train_tokenizer(corpus, TOK, tmp_path)
    assert "Training a wordpiece tokenizer" in caplog.text
    caplog.clear()
    second = load_or_train_tokenizer(corpus, TOK, tmp_path)
    assert "Reusing cached tokenizer" in caplog.text
    assert second.fingerprint == first.fingerprint and second.path == first.path
    assert [second.token_id(t) for t in SPECIAL_TOKENS] == list(range(len(SPECIAL_TOKENS)))


def test_tokenizer_invalidated_by_data_or_tokenizer_config(tmp_path):
    base = load_or_train_tokenizer(_corpus(tmp_path), TOK, tmp_path).fingerprint
    assert load_or_train_tokenizer(_corpus(tmp_path, seed=1), TOK, tmp_path).fingerprint != base
    assert load_or_train_tokenizer(_corpus(tmp_path), replace(TOK, vocab_size=500), tmp_path).fingerprint != base
    assert load_or_train_tokenizer(_corpus(tmp_path), replace(TOK, kind="bpe"), tmp_path).fingerprint != base


@pytest.mark.parametrize("kind", ["wordpiece", "bpe", "unigram"])
def test_each_tokenizer_kind_round_trips_words(tmp_path, kind):
    tok = load_or_train_tokenizer(_corpus(tmp_path), replace(TOK, kind=kind), tmp_path)
    ids = tok.tokenizer.encode("she works for the party", add_special_tokens=False).ids
    assert ids and all(i not in tok.special_ids for i in ids)
    assert tok.tokenizer.decode(ids).strip() == "she works for the party"


def test_vocabulary_too_small_for_special_tokens():
    with pytest.raises(ValueError, match="vocab_size=5 is too small.*special tokens"):
        replace(TOK, vocab_size=5).validate()


def test_loading_a_tokenizer_file(tmp_path):
    trained = load_or_train_tokenizer(_corpus(tmp_path), TOK, tmp_path)
    loaded = load_or_train_tokenizer(_corpus(tmp_path), replace(TOK, path=str(trained.path)), tmp_path)
    assert loaded.vocab_size == trained.vocab_size
    with pytest.raises(FileNotFoundError, match="missing.json"):
        load_or_train_tokenizer(_corpus(tmp_path), replace(TOK, path=str(tmp_path / "missing.json")), tmp_path)
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    with pytest.raises(ValueError, match="not a valid tokenizer.json"):
        load_or_train_tokenizer(_corpus(tmp_path), replace(TOK, path=str(broken)), tmp_path)


def test_token_cache_is_built_once_then_reused(tmp_path, caplog, monkeypatch):
    caplog.set_level(logging.INFO)
    corpus = _corpus(tmp_path)
    tok = load_or_train_tokenizer(corpus, TOK, tmp_path)
    built = load_or_build(corpus, tok, "train", tmp_path)
    assert "Tokenizing the train split" in caplog.text
    # a reuse must not tokenize anything: make tokenizing impossible
    monkeypatch.setattr(token_cache, "_chunks", lambda *a: pytest.fail("re-tokenized a cached split"))
    again = load_or_build(corpus, tok, "train", tmp_path)
    assert np.array_equal(_tokens(again), _tokens(built))
    assert again.stream.shard(0).tokens.dtype == np.uint16
    expected = sum(len(tok.tokenizer.encode(d, add_special_tokens=False).ids) + 1 for d in corpus.documents("train"))
    assert built.n_tokens == expected and built.n_documents == 120


def test_token_cache_invalidated_by_tokenizer_or_data(tmp_path):
    corpus = _corpus(tmp_path)
    tok = load_or_train_tokenizer(corpus, TOK, tmp_path)
    base = load_or_build(corpus, tok, "train", tmp_path).fingerprint
    other_tok = load_or_train_tokenizer(corpus, replace(TOK, vocab_size=450), tmp_path)
    assert load_or_build(corpus, other_tok, "train", tmp_path).fingerprint != base
    other_data = _corpus(tmp_path, seed=2)
    assert load_or_build(other_data, tok, "train", tmp_path).fingerprint != base
    assert load_or_build(corpus, tok, "validation", tmp_path).fingerprint != base


def test_corrupt_token_cache_is_rebuilt(tmp_path, caplog):
    corpus = _corpus(tmp_path)
    tok = load_or_train_tokenizer(corpus, TOK, tmp_path)
    built = load_or_build(corpus, tok, "train", tmp_path, TokenizeConfig(shard_documents=50))
    good = _tokens(built)
    path = tmp_path / "tokens" / built.fingerprint / "shard-00001" / "tokens.bin"
    path.write_bytes(path.read_bytes()[:100])  # truncated, as by a crash or a full disk
    caplog.set_level(logging.WARNING)
    rebuilt = load_or_build(corpus, tok, "train", tmp_path, TokenizeConfig(shard_documents=50))
    assert "shard-00001 is inconsistent" in caplog.text
    assert np.array_equal(_tokens(rebuilt), good)


def test_failed_build_leaves_no_cache_entry(tmp_path):
    corpus = _corpus(tmp_path)
    tok = load_or_train_tokenizer(corpus, TOK, tmp_path)
    empty = replace(corpus, _documents=lambda split: iter(["   ", ""]))
    with pytest.raises(ValueError, match="empty"):
        load_or_build(empty, tok, "train", tmp_path)
    assert [p.name for p in (tmp_path / "tokens").iterdir() if p.is_dir()] == []


@pytest.mark.parametrize("kind", ["wordpiece", "bpe"])
def test_training_the_same_tokenizer_twice_gives_the_same_file(tmp_path, kind):
    """WordPiece's trainer numbered continuation pieces in hash order, so ties between merges broke differently in
    each training (without the fix, 1-2% of the vocabulary differed); BPE over bytes never did."""
    cfg = replace(TOK, kind=kind, vocab_size=1500)
    trained = [load_or_train_tokenizer(_corpus(tmp_path), cfg, tmp_path / f"cache{i}") for i in range(3)]
    files = {t.path.read_text() for t in trained}
    assert len(files) == 1
    tok = trained[0]
    if kind == "wordpiece":  # the continuation pieces given to the trainer are ordinary pieces, not special ones
        ids = tok.tokenizer.encode("she works for zorblaxian trading", add_special_tokens=False).ids
        assert any(tok.tokenizer.id_to_token(i).startswith("##") for i in ids)
        assert tok.tokenizer.decode(ids) == "she works for zorblaxian trading"
        assert not any(tok.tokenizer.id_to_token(i).startswith("##") for i in tok.special_ids)


def test_the_builder_of_an_entry_removes_what_a_killed_build_left_and_keeps_the_rest(tmp_path):
    final = tmp_path / "tokenizers" / "abc"
    beside, inside = tmp_path / "tokenizers" / ".abc.x1y2z3", final / ".shard-00001.q9"
    for path in (beside, inside, tmp_path / "tokenizers" / ".abd.x1"):
        path.mkdir(parents=True)
        (path / "part").write_text("half-written")
    (final / "tokenizer.json").write_text("{}")
    with building(final):
        assert not beside.exists() and not inside.exists()
    assert (final / "tokenizer.json").exists() and (tmp_path / "tokenizers" / ".abd.x1").exists()  # another entry's


def test_without_file_locks_a_build_goes_on_unserialised_and_removes_nothing(tmp_path, monkeypatch, caplog):
    def no_locks(*args):
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(fcntl, "flock", no_locks)
    unfinished = tmp_path / ".abc.x1y2z3"
    unfinished.mkdir()
    caplog.set_level(logging.WARNING)
    with building(tmp_path / "abc"):
        pass
    assert unfinished.exists()  # perhaps a concurrent builder's, which nothing excludes
    assert "No file lock on" in caplog.text and "a concurrent build of it is not waited for" in caplog.text
