"""The corpus tokenized once into a flat memory-mapped array with document offsets.

Layout of one cache entry (a directory named by fingerprint):
    tokens.bin    every document's ids followed by [SEP], concatenated (uint16 if the vocab fits, else uint32)
    offsets.npy   int64, n_documents + 1 start positions into tokens.bin
    sentences.npy int64, the start position of every sentence (each document's first token included)
    meta.json     dtype, counts and the fingerprints it was built from
"""

from __future__ import annotations

import json
import logging
import re
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import islice
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from lmlab.data.cache import atomic_directory, fingerprint
from lmlab.data.corpus import Corpus
from lmlab.data.tokenizer import SEP, TrainedTokenizer
from lmlab.errors import InputError

log = logging.getLogger(__name__)

CACHE_VERSION = 2
# A sentence ends at ., ! or ? (possibly followed by closing quotes/brackets) before whitespace. The next
# sentence's first token is the first one starting at or after that end (byte-level BPE tokens own the space).
_SENTENCE_END = re.compile(r"[.!?]+[\"')\]]*(?=\s)")
_CHUNK_DOCUMENTS = 2048


@dataclass
class TokenArray:
    tokens: np.ndarray  # memory-mapped, read-only
    offsets: np.ndarray
    sentence_starts: np.ndarray
    fingerprint: str

    @property
    def n_documents(self) -> int:
        return len(self.offsets) - 1


def load_or_build(corpus: Corpus, tokenizer: TrainedTokenizer, split: str, cache_dir: Path) -> TokenArray:
    fp = fingerprint("tokens", CACHE_VERSION, corpus.fingerprint, tokenizer.fingerprint, split)
    final = cache_dir / "tokens" / fp
    cached = _load(final, fp)
    if cached is not None:
        log.info(
            "Reusing token cache %s for %s (%d tokens, %d documents)",
            fp,
            split,
            len(cached.tokens),
            cached.n_documents,
        )
        return cached
    if final.exists():
        shutil.rmtree(final)
    log.info("Tokenizing the %s split of %s into %s", split, corpus.description, final)
    dtype = np.uint16 if tokenizer.vocab_size <= np.iinfo(np.uint16).max + 1 else np.uint32
    sep = tokenizer.token_id(SEP)
    offsets = [0]
    sentences: list[np.ndarray] = []
    with atomic_directory(final) as tmp:
        with open(tmp / "tokens.bin", "wb") as out:
            progress = tqdm(desc=f"tokenizing {split}", unit="docs", leave=False, disable=None)  # none off a TTY
            for chunk in _chunks(corpus.documents(split), _CHUNK_DOCUMENTS):
                encodings = tokenizer.tokenizer.encode_batch(chunk, add_special_tokens=False)
                for text, enc in zip(chunk, encodings, strict=True):
                    ids = np.asarray(enc.ids + [sep], dtype=dtype)
                    out.write(ids.tobytes())
                    sentences.append(offsets[-1] + sentence_starts(text, enc.offsets))
                    offsets.append(offsets[-1] + len(ids))
                progress.update(len(chunk))
            progress.close()
        if len(offsets) == 1:
            raise InputError(
                f"the {split} split of {corpus.description} is empty: it has no non-blank documents. A corpus without "
                "its own validation split holds out every round(1/data.validation_fraction)-th document, so it needs "
                "at least that many; data.documents (line, paragraph, wikitext) says what one document is"
            )
        np.save(tmp / "offsets.npy", np.asarray(offsets, dtype=np.int64))
        np.save(tmp / "sentences.npy", np.concatenate(sentences).astype(np.int64))
        meta = {
            "dtype": np.dtype(dtype).name,
            "n_tokens": offsets[-1],
            "n_documents": len(offsets) - 1,
            "corpus": corpus.fingerprint,
            "tokenizer": tokenizer.fingerprint,
            "split": split,
        }
        (tmp / "meta.json").write_text(json.dumps(meta, indent=2))
    log.info("Cached %d tokens in %d documents", offsets[-1], len(offsets) - 1)
    loaded = _load(final, fp)
    assert loaded is not None
    return loaded


def _load(path: Path, fp: str) -> TokenArray | None:
    """The cache entry at `path`, or None if it is missing or does not match its own metadata."""
    try:
        meta = json.loads((path / "meta.json").read_text())
        dtype = np.dtype(meta["dtype"])
        offsets = np.load(path / "offsets.npy")
        sentences = np.load(path / "sentences.npy")
        size = (path / "tokens.bin").stat().st_size
    except (OSError, ValueError, KeyError):
        return None
    if (
        size != meta["n_tokens"] * dtype.itemsize
        or len(offsets) != meta["n_documents"] + 1
        or offsets[-1] != meta["n_tokens"]
        or len(sentences) < meta["n_documents"]
    ):
        log.warning("Token cache %s is inconsistent with its metadata; rebuilding it", path)
        return None
    return TokenArray(np.memmap(path / "tokens.bin", dtype=dtype, mode="r"), offsets, sentences, fp)


def sentence_starts(text: str, token_offsets: list[tuple[int, int]]) -> np.ndarray:
    """Token positions (within the document) where a sentence starts: 0, and the first token after each
    sentence end in `text`. `token_offsets` are the tokens' character spans, as the tokenizer reports them."""
    if not token_offsets:
        return np.zeros(1, dtype=np.int64)
    char_starts = np.asarray([start for start, _ in token_offsets])
    ends = [m.end() for m in _SENTENCE_END.finditer(text)]
    starts = np.searchsorted(char_starts, ends, side="left")
    return np.unique(np.concatenate([[0], starts[starts < len(char_starts)]])).astype(np.int64)


def _chunks(items: Iterator[str], size: int) -> Iterator[list[str]]:
    while chunk := list(islice(items, size)):
        yield chunk
