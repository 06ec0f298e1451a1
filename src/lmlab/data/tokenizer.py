"""Tokenizer training with HF `tokenizers`, cached by (corpus fingerprint, tokenizer config).

WordPiece (the default) and BPE training are reproducible: the same corpus and config give the same tokenizer.json
in every process. `tokenizers`' WordPiece trainer numbers each continuation piece ("##x") as it first meets it while
walking a hash map of words, and breaks ties between equally frequent merges by id, so two trainings differed in
1-2% of their vocabulary; it is given every continuation piece of the corpus's alphabet up front, in sorted order
(one extra pass over the corpus). BPE over bytes needs nothing. Unigram is not reproducible yet: its trainer's
float sums vary in their last bits and it appends the characters it did not keep in hash order."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from itertools import islice
from pathlib import Path
from typing import Any

import numpy as np
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

from lmlab.data.cache import atomic_directory, building, file_digest, fingerprint
from lmlab.data.config import TokenizerConfig
from lmlab.data.corpus import Corpus
from lmlab.errors import InputError, MissingInputFile

log = logging.getLogger(__name__)

PAD, UNK, CLS, SEP, MASK = "[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"
# UL2's paradigm tokens: R-denoising (NLU), X-denoising (NLG), S-denoising (S2S).
NLU, NLG, S2S = "[NLU]", "[NLG]", "[S2S]"
SPECIAL_TOKENS = (PAD, UNK, CLS, SEP, MASK, NLU, NLG, S2S)


def sentinel(i: int) -> str:
    return f"[SPAN{i}]"


@contextmanager
def special_tokens_read(tokenizer: Tokenizer) -> Iterator[Tokenizer]:
    """Within the block, `tokenizer` reads special tokens spelled in text ("[SEP]", "[SPAN0]") as those tokens: for
    control input that means them (a generation prompt's sentinels, the [MASK] a cloze episode inserts)."""
    before, tokenizer.encode_special_tokens = tokenizer.encode_special_tokens, False
    try:
        yield tokenizer
    finally:
        tokenizer.encode_special_tokens = before


@dataclass
class TrainedTokenizer:
    """A tokenizer for data: text that spells a special token ("[SEP]" in a corpus or a task file) is read as text,
    never as the token (see `special_tokens_read` for control input)."""

    tokenizer: Tokenizer
    fingerprint: str
    path: Path

    def __post_init__(self) -> None:
        self.tokenizer.encode_special_tokens = True

    @property
    def vocab_size(self) -> int:
        return self.tokenizer.get_vocab_size()

    def token_id(self, token: str) -> int:
        token_id = self.tokenizer.token_to_id(token)
        if token_id is None:
            raise InputError(f"tokenizer {self.path} has no special token {token}")
        return token_id

    @property
    def special_ids(self) -> list[int]:
        """Every special token: the fixed ones and the sentinels."""
        return sorted(self.tokenizer.get_added_tokens_decoder())

    @property
    def sentinel_ids(self) -> list[int]:
        """[SPAN0], [SPAN1], ... in order."""
        ids: list[int] = []
        while (token_id := self.tokenizer.token_to_id(sentinel(len(ids)))) is not None:
            ids.append(token_id)
        return ids

    def word_continuations(self) -> np.ndarray:
        """(vocab,) bool: True for tokens that continue the word before them (WordPiece "##x"; BPE and Unigram
        tokens without the word-start marker). Whole-word masking groups a token with the word it continues."""
        model = self.tokenizer.model
        vocab = self.tokenizer.get_vocab()
        if isinstance(model, models.WordPiece):
            prefix = model.continuing_subword_prefix

            def continues(token: str) -> bool:
                return token.startswith(prefix)
        else:
            marker = "\u0120" if isinstance(model, models.BPE) else "\u2581"  # byte-level space, metaspace

            def continues(token: str) -> bool:
                return not token.startswith(marker) and token.isalnum()

        out = np.zeros(self.vocab_size, dtype=bool)
        for token, index in vocab.items():
            out[index] = continues(token)
        out[self.special_ids] = False
        return out


def load_or_train_tokenizer(corpus: Corpus, cfg: TokenizerConfig, cache_dir: Path) -> TrainedTokenizer:
    if cfg.path:
        return _load(Path(cfg.path).expanduser())
    settings = asdict(cfg)
    if cfg.train_documents is None:  # the whole split, as before the setting existed: cached tokenizers still match
        del settings["train_documents"]
    fp = fingerprint("tokenizer", corpus.fingerprint, settings)
    path = cache_dir / "tokenizers" / fp / "tokenizer.json"
    trained = False
    if not path.is_file():
        with building(path.parent):
            if not path.is_file():  # there now if the process this one waited for trained it
                _train(corpus, cfg, path.parent)
                trained = True
    if not trained:
        log.info("Reusing cached tokenizer %s (%s)", fp, path.parent)
    return TrainedTokenizer(Tokenizer.from_file(str(path)), fp, path)


def _train(corpus: Corpus, cfg: TokenizerConfig, final: Path) -> None:
    log.info("Training a %s tokenizer (vocab %d) on %s", cfg.kind, cfg.vocab_size, corpus.description)
    tokenizer = _trained(corpus, cfg)
    if tokenizer.get_vocab_size() <= len(SPECIAL_TOKENS) + cfg.sentinels:
        raise InputError(f"the corpus {corpus.description} yielded no vocabulary beyond the special tokens")
    with atomic_directory(final) as tmp:
        tokenizer.save(str(tmp / "tokenizer.json"))
    log.info("Saved tokenizer %s with %d tokens to %s", final.name, tokenizer.get_vocab_size(), final)


def _load(path: Path) -> TrainedTokenizer:
    if not path.is_file():
        raise MissingInputFile(f"data.tokenizer.path: {path} does not exist")
    try:
        tokenizer = Tokenizer.from_file(str(path))
    except Exception as err:
        raise InputError(f"data.tokenizer.path: {path} is not a valid tokenizer.json: {err}") from err
    loaded = TrainedTokenizer(tokenizer, file_digest(path)[:16], path)
    missing = [t for t in (PAD, UNK, CLS, SEP, MASK) if tokenizer.token_to_id(t) is None]
    if missing:
        raise InputError(f"data.tokenizer.path: {path} lacks the special tokens {missing}")
    log.info("Loaded tokenizer %s from %s", loaded.fingerprint, path)
    return loaded


def _trained(corpus: Corpus, cfg: TokenizerConfig) -> Tokenizer:
    specials = list(SPECIAL_TOKENS) + [sentinel(i) for i in range(cfg.sentinels)]
    common: dict[str, Any] = {"vocab_size": cfg.vocab_size, "show_progress": True}
    norm = [normalizers.NFKC()] + ([normalizers.Lowercase()] if cfg.lowercase else [])
    if cfg.kind == "wordpiece":
        tokenizer = Tokenizer(models.WordPiece(unk_token=UNK))
        tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        tokenizer.decoder = decoders.WordPiece()
        tokenizer.normalizer = normalizers.Sequence(norm)
        continuations = [CONTINUATION + c for c in _alphabet(_training_documents(corpus, cfg), tokenizer)]
        trainer: trainers.Trainer = trainers.WordPieceTrainer(
            min_frequency=cfg.min_frequency, special_tokens=specials + continuations, **common
        )
        tokenizer.train_from_iterator(_training_documents(corpus, cfg), trainer=trainer)
        return _only_special(tokenizer, specials)
    if cfg.kind == "bpe":
        tokenizer = Tokenizer(models.BPE(unk_token=UNK))
        tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True)
        tokenizer.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            min_frequency=cfg.min_frequency,
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            special_tokens=specials,
            **common,
        )
    else:
        tokenizer = Tokenizer(models.Unigram())
        tokenizer.pre_tokenizer = pre_tokenizers.Metaspace()
        tokenizer.decoder = decoders.Metaspace()
        trainer = trainers.UnigramTrainer(unk_token=UNK, special_tokens=specials, **common)
    tokenizer.normalizer = normalizers.Sequence(norm)
    tokenizer.train_from_iterator(_training_documents(corpus, cfg), trainer=trainer)
    return tokenizer


CONTINUATION = "##"  # WordPiece's prefix of a piece that continues a word


def _training_documents(corpus: Corpus, cfg: TokenizerConfig) -> Iterator[str]:
    return islice(corpus.documents("train"), cfg.train_documents)


def _alphabet(documents: Iterable[str], tokenizer: Tokenizer) -> list[str]:
    """Every character of the training documents' words as the tokenizer sees them (normalised, pre-tokenised)."""
    chars: set[str] = set()
    for doc in documents:
        for word, _ in tokenizer.pre_tokenizer.pre_tokenize_str(tokenizer.normalizer.normalize_str(doc)):
            chars.update(word)
    return sorted(chars)


def _only_special(tokenizer: Tokenizer, specials: list[str]) -> Tokenizer:
    """The tokenizer with only `specials` as special (added) tokens: the continuation pieces given to the trainer
    stay ordinary vocabulary entries, matched and decoded like any other piece."""
    data = json.loads(tokenizer.to_str())
    data["added_tokens"] = [t for t in data["added_tokens"] if t["content"] in specials]
    return Tokenizer.from_str(json.dumps(data))
