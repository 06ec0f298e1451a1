"""A split of the corpus tokenized once into a directory of shards (`lmlab.data.shards`), read as one stream.

Shard k holds documents [k * shard_documents, (k + 1) * shard_documents) of the split, so every shard is known by its
number alone: a rerun keeps the shards already written (a tokenization killed halfway resumes where it stopped), a
run that needs only the first `limit` tokens tokenizes only the shards that hold them, and a later run that needs
more appends the next shards. `complete.json` marks a split tokenized to its end.
"""

from __future__ import annotations

import json
import logging
import shutil
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future
from dataclasses import dataclass
from functools import partial
from itertools import islice
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from lmlab.atomic_file import write_text_atomic
from lmlab.data.blocks import ShardedStream
from lmlab.data.cache import building, fingerprint
from lmlab.data.config import TokenizeConfig
from lmlab.data.corpus import Corpus
from lmlab.data.shards import ShardCounts, map_shard, read_shard, shard_dir, shard_writer, write_shard
from lmlab.data.tokenizer import SEP, TrainedTokenizer
from lmlab.errors import InputError

log = logging.getLogger(__name__)

CACHE_VERSION = 4  # v4: text that spells a special token is tokenized as text
COMPLETE = "complete.json"


@dataclass
class TokenArray:
    """The shards a run reads, and a fingerprint of exactly those."""

    stream: ShardedStream
    fingerprint: str

    @property
    def n_tokens(self) -> int:
        return self.stream.n_tokens

    @property
    def n_documents(self) -> int:
        return self.stream.n_documents


def load_or_build(
    corpus: Corpus,
    tokenizer: TrainedTokenizer,
    split: str,
    cache_dir: Path,
    tokenize: TokenizeConfig | None = None,
    limit: int | None = None,
) -> TokenArray:
    """The first shards of `split` that hold `limit` tokens (all of them if None), tokenizing what is missing."""
    tokenize = tokenize or TokenizeConfig()
    shard_documents = tokenize.shard_documents
    fp = fingerprint("tokens", CACHE_VERSION, corpus.fingerprint, tokenizer.fingerprint, split, shard_documents)
    entry = cache_dir / "tokens" / fp
    entry.parent.mkdir(parents=True, exist_ok=True)
    shards = _prefix(entry, limit)
    built = False
    if shards is None:
        with building(entry):
            shards = _prefix(entry, limit)  # there now if the process this one waited for built it
            if shards is None:
                shards, built = _build(corpus, tokenizer, split, entry, tokenize, limit), True
    if not built:
        log.info("Reusing token cache %s for %s", fp, split)
    stream = ShardedStream([(c.n_tokens, c.n_documents) for c in shards], partial(map_shard, entry))
    log.info("%s: %d tokens in %d documents, %d shards", split, stream.n_tokens, stream.n_documents, len(shards))
    return TokenArray(stream, fingerprint(fp, len(shards)) if limit is not None else fp)


def _prefix(entry: Path, limit: int | None) -> list[ShardCounts] | None:
    """The shards from the first that hold `limit` tokens (or the whole split), or None while some are missing."""
    n_shards = _complete_shards(entry)
    shards: list[ShardCounts] = []
    total = 0
    while n_shards is None or len(shards) < n_shards:
        if limit is not None and total >= limit:
            return shards
        read = _read(entry, len(shards))
        if read is None:
            return None
        shards.append(read)
        total += read.n_tokens
    return shards


def _complete_shards(entry: Path) -> int | None:
    """The shard count `complete.json` records, or None when the split is not marked complete; a marker that cannot
    be read (truncated by a full disk or a kill) is removed, so the split is checked shard by shard and rebuilt."""
    marker = entry / COMPLETE
    if not marker.is_file():
        return None
    try:
        n_shards = json.loads(marker.read_text())["n_shards"]
        if isinstance(n_shards, int) and n_shards > 0:
            return n_shards
    except (OSError, ValueError, KeyError, TypeError):
        pass
    log.warning("Token cache marker %s is unreadable; checking the split's shards again", marker)
    marker.unlink(missing_ok=True)
    return None


def _read(entry: Path, index: int) -> ShardCounts | None:
    path = shard_dir(entry, index)
    read = read_shard(path)
    if read is None and path.exists():
        log.warning("Token cache shard %s is inconsistent with its metadata; rebuilding it", path)
        shutil.rmtree(path)
    return read


def _build(
    corpus: Corpus, tokenizer: TrainedTokenizer, split: str, entry: Path, tokenize: TokenizeConfig, limit: int | None
) -> list[ShardCounts]:
    """Write the missing shards in order until `limit` tokens are in hand or the split ends; the shards in hand."""
    dtype = np.uint16 if tokenizer.vocab_size <= np.iinfo(np.uint16).max + 1 else np.uint32
    log.info("Tokenizing the %s split of %s into %s (%d processes)", split, corpus.description, entry,
             tokenize.num_proc)  # fmt: skip
    # At most this many shards are read ahead of the oldest unfinished one: memory stays bounded.
    window = 2 * tokenize.num_proc
    pending: deque[Future[ShardCounts]] = deque()
    n_shards = total = 0
    ended = True
    progress = tqdm(desc=f"tokenizing {split}", unit="docs", leave=False, disable=None)  # none off a TTY
    writer = shard_writer(tokenizer.tokenizer, tokenizer.token_id(SEP), np.dtype(dtype), tokenize.num_proc)
    try:
        for index, documents in enumerate(_chunks(corpus.documents(split), tokenize.shard_documents)):
            kept = _read(entry, index)
            if kept is not None:
                pending.append(_done(kept))
            else:
                pending.append(writer.submit(write_shard, shard_dir(entry, index), documents))
            n_shards = index + 1
            while pending and (len(pending) > window or pending[0].done()):
                counts = pending.popleft().result()
                total += counts.n_tokens
                progress.update(counts.n_documents)
            if limit is not None and total >= limit:
                ended = False
                break
        for future in pending:
            future.result()
    finally:
        writer.shutdown(wait=True, cancel_futures=True)
        progress.close()
    if not n_shards:
        raise InputError(
            f"the {split} split of {corpus.description} is empty: it has no non-blank documents. A corpus "
            "without its own validation split holds out every round(1/data.validation_fraction)-th document, so "
            "it needs at least that many; data.documents (line, paragraph, wikitext) says what one document is"
        )
    if ended:
        write_text_atomic(entry / COMPLETE, json.dumps({"split": split, "n_shards": n_shards}))
    shards = _prefix(entry, limit)
    assert shards, f"token cache {entry} is incomplete right after it was built"
    return shards


def _done(counts: ShardCounts) -> Future[ShardCounts]:
    future: Future[ShardCounts] = Future()
    future.set_result(counts)
    return future


def _chunks(items: Iterator[str], size: int) -> Iterator[list[str]]:
    while chunk := list(islice(items, size)):
        yield chunk
