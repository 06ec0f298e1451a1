"""One shard of a token cache: a fixed run of documents tokenized into its own directory, written whole or not at all.

Layout of `shard-NNNNN/`:
    tokens.bin     every document's ids followed by [SEP], concatenated (uint16 if the vocab fits, else uint32)
    documents.npy  int64, where each document starts in tokens.bin
    sentences.npy  int64, where each sentence starts (each document's first token included)
    meta.json      dtype and counts

Shards are written through `shard_writer`: in this process, or by `num_proc` forked workers that each tokenize whole
shards on one thread (the tokenizer's own threads would fight them for the cores).
"""

from __future__ import annotations

import json
import multiprocessing
import os
import re
from collections.abc import Sequence
from concurrent.futures import Executor, Future, ProcessPoolExecutor
from dataclasses import dataclass
from itertools import chain
from pathlib import Path
from typing import Any

import numpy as np
from tokenizers import Tokenizer

from lmlab.data.blocks import TokenStream
from lmlab.data.cache import atomic_directory
from lmlab.errors import InputError

# A sentence ends at ., ! or ? (possibly followed by closing quotes/brackets) before whitespace. The next
# sentence's first token is the first one starting at or after that end (byte-level BPE tokens own the space).
_SENTENCE_END = re.compile(r"[.!?]+[\"')\]]*(?=\s)")


@dataclass(frozen=True)
class ShardCounts:
    n_tokens: int
    n_documents: int


def shard_dir(entry: Path, index: int) -> Path:
    return entry / f"shard-{index:05d}"


def read_shard(path: Path) -> ShardCounts | None:
    """The counts of the shard at `path`, or None if it is missing or does not match its own metadata."""
    try:
        meta = json.loads((path / "meta.json").read_text())
        dtype = np.dtype(meta["dtype"])
        n_documents = len(np.load(path / "documents.npy", mmap_mode="r"))
        n_sentences = len(np.load(path / "sentences.npy", mmap_mode="r"))
        size = (path / "tokens.bin").stat().st_size
        counts = ShardCounts(int(meta["n_tokens"]), int(meta["n_documents"]))
    except (OSError, ValueError, KeyError):
        return None
    if (
        counts.n_documents < 1
        or size != counts.n_tokens * dtype.itemsize
        or n_documents != counts.n_documents
        or n_sentences < counts.n_documents
    ):
        return None
    return counts


def map_shard(entry: Path, index: int) -> TokenStream:
    """Shard `index` of the cache `entry` (checked by `read_shard` when the run started), memory-mapped."""
    path = shard_dir(entry, index)
    try:
        dtype = np.dtype(json.loads((path / "meta.json").read_text())["dtype"])
        return TokenStream(
            np.memmap(path / "tokens.bin", dtype=dtype, mode="r"),
            np.load(path / "documents.npy", mmap_mode="r"),
            np.load(path / "sentences.npy", mmap_mode="r"),
        )
    except (OSError, ValueError, KeyError) as err:
        raise InputError(
            f"token cache shard {path} can no longer be read ({err}): it changed while this run was reading it. "
            "Rerun to rebuild it"
        ) from err


def sentence_starts(documents: Sequence[str], encodings: Sequence[Any], document_starts: np.ndarray) -> np.ndarray:
    """Positions in the shard's tokens where a sentence starts: each document's first token, and in a document the first
    token starting at or after each sentence end of its text (token character spans as the tokenizer reports them).
    Found for the whole shard at once: the documents' texts joined by newlines, their tokens' spans shifted to match."""
    text_bases = np.cumsum([0] + [len(d) + 1 for d in documents[:-1]])
    counts = np.fromiter((len(e.ids) for e in encodings), dtype=np.int64, count=len(encodings))
    char_starts = np.fromiter(chain.from_iterable((s for s, _ in e.offsets) for e in encodings), dtype=np.int64)
    char_starts += np.repeat(text_bases, counts)
    ends = [m.end() for m in _SENTENCE_END.finditer("\n".join(documents))]
    # The first token at or after an end, in the tokens without the [SEP]s; one [SEP] follows each earlier document.
    first = np.searchsorted(char_starts, ends, side="left")
    first = first[first < len(char_starts)]
    position = first + np.searchsorted(np.cumsum(counts), first, side="right")
    # An end that closes a document's text lands on the next document's first token: a start anyway.
    return np.unique(np.concatenate([document_starts, position])).astype(np.int64)


@dataclass(frozen=True)
class _Encoder:
    tokenizer: Tokenizer
    sep_id: int
    dtype: np.dtype


# The encoder of this process: set once per worker (or in this process) before any shard is written.
_encoder: _Encoder | None = None


def _set_encoder(tokenizer_json: str, sep_id: int, dtype: str, one_thread: bool) -> None:
    global _encoder
    if one_thread:
        os.environ["TOKENIZERS_PARALLELISM"] = "false"
    tokenizer = Tokenizer.from_str(tokenizer_json)
    tokenizer.encode_special_tokens = True  # corpus text that spells "[SEP]" is text (as in TrainedTokenizer)
    _encoder = _Encoder(tokenizer, sep_id, np.dtype(dtype))


def write_shard(path: Path, documents: Sequence[str]) -> ShardCounts:
    """Tokenize `documents` (non-empty) into the shard directory `path`, which appears complete or not at all."""
    assert _encoder is not None, "the shard writer's encoder is not set"
    encodings = _encoder.tokenizer.encode_batch(list(documents), add_special_tokens=False)
    lengths = np.fromiter((len(e.ids) + 1 for e in encodings), dtype=np.int64, count=len(encodings))
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
    tokens: list[int] = []
    for enc in encodings:
        tokens.extend(enc.ids)
        tokens.append(_encoder.sep_id)
    with atomic_directory(path) as tmp:
        np.asarray(tokens, dtype=_encoder.dtype).tofile(tmp / "tokens.bin")
        np.save(tmp / "documents.npy", starts)
        np.save(tmp / "sentences.npy", sentence_starts(documents, encodings, starts))
        counts = ShardCounts(int(lengths.sum()), len(documents))
        meta = {"dtype": _encoder.dtype.name, "n_tokens": counts.n_tokens, "n_documents": counts.n_documents}
        (tmp / "meta.json").write_text(json.dumps(meta, indent=2))
    return counts


class _InProcess(Executor):
    """Writes each shard when it is submitted (num_proc=1): the tokenizer's threads use the cores."""

    def submit(self, fn: Any, /, *args: Any, **kwargs: Any) -> Future:
        done: Future = Future()
        try:
            done.set_result(fn(*args, **kwargs))
        except BaseException as err:
            done.set_exception(err)
        return done


def shard_writer(tokenizer: Tokenizer, sep_id: int, dtype: np.dtype, num_proc: int) -> Executor:
    """An executor for `write_shard`: this process, or `num_proc` worker processes."""
    setup = (tokenizer.to_str(), sep_id, np.dtype(dtype).name)
    if num_proc == 1:
        _set_encoder(*setup, one_thread=False)
        return _InProcess()
    # fork: a worker starts in milliseconds and needs nothing from the parent's imports but tokenizers and numpy.
    methods = multiprocessing.get_all_start_methods()
    context = multiprocessing.get_context("fork" if "fork" in methods else "spawn")
    return ProcessPoolExecutor(num_proc, mp_context=context, initializer=_set_encoder, initargs=(*setup, True))
