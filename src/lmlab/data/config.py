"""Schema of the `data` config group."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

from lmlab.config_schema import at_least, choice, require_file
from lmlab.data import file_sets
from lmlab.errors import InputError

SOURCES = ("synthetic", "files", "hub")
DOCUMENT_SPLITTING = ("line", "paragraph", "wikitext")
TOKENIZER_KINDS = ("wordpiece", "bpe", "unigram")


@dataclass
class WorldConfig:
    """The synthetic world (data.source=synthetic)."""

    seed: int = 1234
    train_documents: int = 20000
    validation_documents: int = 500
    people: int = 300
    places: int = 60
    organisations: int = 80


@dataclass
class HubConfig:
    """A dataset from the Hugging Face hub, or a local dataset directory given as `path`."""

    path: str = ""
    name: str | None = None
    revision: str | None = None
    # The repository's sub-directory holding the data files (e.g. a parquet conversion branch's config directory).
    data_dir: str | None = None
    train_split: str = "train"
    validation_split: str | None = "validation"
    streaming: bool = False


@dataclass
class TokenizerConfig:
    kind: str = "wordpiece"
    vocab_size: int = 8192
    min_frequency: int = 2
    lowercase: bool = True
    # Sentinel tokens [SPAN0], [SPAN1], ... that stand for dropped spans in span corruption (T5 has 100).
    sentinels: int = 100
    # A trained tokenizer.json to load instead of training one.
    path: str | None = None
    # Train on the first this many training documents (null: all of them); a web corpus needs no more than a sample.
    train_documents: int | None = None

    def validate(self) -> None:
        from lmlab.data.tokenizer import SPECIAL_TOKENS  # the tokenizer module builds on this one

        choice("data.tokenizer.kind", self.kind, TOKENIZER_KINDS)
        at_least("data.tokenizer.sentinels", self.sentinels, 0)
        if self.train_documents is not None:
            at_least("data.tokenizer.train_documents", self.train_documents, 1)
        n_special = len(SPECIAL_TOKENS) + self.sentinels
        if self.path is None and self.vocab_size <= n_special:
            raise InputError(
                f"data.tokenizer.vocab_size={self.vocab_size} is too small: it must exceed the {n_special} special "
                f"tokens {list(SPECIAL_TOKENS)} + {self.sentinels} sentinels (data.tokenizer.sentinels)"
            )
        if self.path:
            require_file(self.path, "data.tokenizer.path")


@dataclass
class TokenizeConfig:
    """How the corpus becomes the token cache: in shards of `shard_documents` documents, each written whole (an
    interrupted tokenization resumes at the first missing shard), by `num_proc` processes."""

    num_proc: int = 1
    shard_documents: int = 8192

    def validate(self) -> None:
        at_least("data.tokenize.num_proc", self.num_proc, 1)
        at_least("data.tokenize.shard_documents", self.shard_documents, 1)


@dataclass
class DataConfig:
    name: str = "synthetic"
    source: str = "synthetic"
    world: WorldConfig = field(default_factory=WorldConfig)
    hub: HubConfig = field(default_factory=HubConfig)
    files: list[str] = field(default_factory=list)
    # What one document is where the source is lines of text: .txt files (line | paragraph, the default | wikitext)
    # and hub datasets whose rows are WikiText lines (wikitext). Elsewhere a row or a generated document is one, and
    # anything but the default is refused.
    documents: str = "paragraph"
    text_column: str = "text"
    # Without a validation split, every round(1/validation_fraction)-th document is held out.
    validation_fraction: float = 0.05
    max_documents: int | None = None
    # Tokenize only the first documents of the training split that hold this many tokens (in whole shards, so up to a
    # shard more), and of the validation split max_tokens * validation_fraction / (1 - validation_fraction). The run
    # trains on exactly those. null: the whole corpus. 20e9 is accepted (a whole number written as a float).
    max_tokens: float | None = None
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    tokenize: TokenizeConfig = field(default_factory=TokenizeConfig)
    block_size: int = 128
    batch_size: int = 32
    num_workers: int = 0

    def validate(self) -> None:
        choice("data.source", self.source, SOURCES)
        choice("data.documents", self.documents, DOCUMENT_SPLITTING)
        if self.documents != "paragraph":
            self._check_documents_apply()
        if self.source != "files" and self.files:
            raise InputError(
                f"data.files is set but data.source={self.source} reads no files (data={self.name}); choose data=text "
                "to train on files"
            )
        if self.source == "files" and not self.files:
            raise InputError("data.source=files needs data.files=[path, ...]; none given")
        if self.source == "files":
            file_sets.one_format(file_sets.expand(self.files))
        if self.source == "hub" and not self.hub.path:
            raise InputError("data.source=hub needs data.hub.path (a hub dataset name or a local directory)")
        if not 0.0 < self.validation_fraction < 0.5:
            raise InputError(f"data.validation_fraction must be in (0, 0.5), got {self.validation_fraction}")
        for key in ("block_size", "batch_size"):
            if getattr(self, key) < 1:
                raise InputError(f"data.{key} must be >= 1, got {getattr(self, key)}")
        if self.max_tokens is not None and (self.max_tokens < 1 or self.max_tokens != int(self.max_tokens)):
            raise InputError(f"data.max_tokens={self.max_tokens!r}: expected a whole number of tokens >= 1, or null")

    def token_limit(self, split: str) -> int | None:
        """How many tokens of `split` the run needs (None: all)."""
        if self.max_tokens is None:
            return None
        if split == "train":
            return int(self.max_tokens)
        return math.ceil(self.max_tokens * self.validation_fraction / (1 - self.validation_fraction))

    def _check_documents_apply(self) -> None:
        """data.documents splits lines of text; where the source has none it would be ignored."""
        where = None
        if self.source == "synthetic":
            where = "the synthetic world generates whole documents"
        elif self.source == "files":
            not_text = [f for f in self.files if file_sets.file_format(Path(f)) != "text"]
            if not_text:
                where = f"{not_text} are record files (one document per row)"
        elif self.source == "hub" and self.documents != "wikitext":
            where = "a hub dataset's rows are its documents (only documents=wikitext regroups WikiText lines)"
        if where:
            raise InputError(f"data.documents={self.documents} would be ignored: {where}; drop it")
