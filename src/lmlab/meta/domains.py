"""Text-domain episodes, for meta-training a language model ("MetaGPT"): an episode is one domain, its support a
few rows of the domain's text to adapt on, its query other text of the same domain, scored after adaptation.

Sources:
- `people`: a domain is a person of a synthetic world the pretraining corpus does not hold (its own seed: new
  people, places and organisations); support = `support_rows` documents about them, query = `query_rows` other
  documents. Their facts (age, job, home, employer) appear only in the support text: that is what adaptation can
  learn.
- `files`: a domain is a local text file; support = `support_rows` consecutive windows of `max_length` tokens from a
  random offset, query = the `query_rows` windows that follow.

Domains are split into disjoint meta-train / meta-val / meta-test pools by `split_seed`, and episode `index` of a
pool is a pure function of (seed, pool, index), as for class episodes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from lmlab.config_schema import at_least, choice, require_file
from lmlab.data.config import WorldConfig
from lmlab.data.synthetic import World
from lmlab.data.text_files import checked_lines
from lmlab.data.tokenizer import PAD, SEP, TrainedTokenizer
from lmlab.errors import InputError
from lmlab.heads import IGNORE
from lmlab.meta.episodes import POOLS, Episode, PoolSplitConfig, split_names

SOURCES = ("people", "files")


@dataclass
class DomainConfig(PoolSplitConfig):
    kind: str = "domains"
    name: str = "people"
    # people: persons of a synthetic world (world.*); files: each of `files` is a domain.
    source: str = "people"
    # Rows of at most max_length tokens: a document about the person (people), or a window of the file (files).
    support_rows: int = 4
    query_rows: int = 2
    max_length: int = 128
    # people: a world of its own seed (the pretraining corpus's is 1234), so that no domain was seen in pretraining.
    world: WorldConfig = field(default_factory=lambda: WorldConfig(seed=4321))
    # files
    files: list[str] = field(default_factory=list)

    def validate(self) -> None:
        super().validate()
        choice("episodes.source", self.source, SOURCES)
        at_least("episodes.support_rows", self.support_rows, 1)
        at_least("episodes.query_rows", self.query_rows, 1)
        at_least("episodes.max_length", self.max_length, 4)
        if self.source == "people":
            at_least("episodes.world.people", self.world.people, len(POOLS))
            if self.files:
                raise InputError("episodes.files is for episodes.source=files; it would be ignored with people")
        else:
            if not self.files:
                raise InputError("episodes.source=files needs episodes.files (text files, one domain each)")
            for i, path in enumerate(self.files):
                require_file(path, f"episodes.files[{i}]")

    @property
    def rows(self) -> int:
        return self.support_rows + self.query_rows


def lm_batch(rows: list[list[int]], pad_id: int) -> dict[str, torch.Tensor]:
    """Rows of token ids as a next-token batch: labels[t] = ids[t + 1] within a row, padding never predicted."""
    n_real = torch.tensor([len(r) for r in rows])
    width = int(n_real.max())
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, : len(row)] = torch.tensor(row)
    mask = torch.arange(width)[None, :] < n_real[:, None]
    labels = torch.full_like(ids, IGNORE)
    labels[:, :-1] = torch.where(mask[:, 1:], ids[:, 1:], IGNORE)
    return {"input_ids": ids, "padding_mask": mask, "labels": labels, "n_real": n_real}


class DomainEpisodes:
    """One-domain episodes of the configured source (an `EpisodeSource`)."""

    def __init__(self, cfg: DomainConfig, tokenizer: TrainedTokenizer) -> None:
        cfg.validate()
        self.cfg, self.eval_seed, self.tokenizer = cfg, cfg.eval_seed, tokenizer
        self.pad_id, self.sep_id = tokenizer.token_id(PAD), tokenizer.token_id(SEP)
        if cfg.source == "people":
            w = cfg.world
            self.world = World(w.seed, n_people=w.people, n_places=w.places, n_orgs=w.organisations)
            self.domains = {f"{i:04d} {p.name}": i for i, p in enumerate(self.world.people)}
        else:
            self.file_tokens = {path: self._file_tokens(i, Path(path).expanduser()) for i, path in enumerate(cfg.files)}
            self.domains = {path: i for i, path in enumerate(cfg.files)}
        self.pools = split_names(
            sorted(self.domains), cfg.train_fraction, cfg.val_fraction, cfg.split_seed, 1, {}, "domains"
        )

    def _file_tokens(self, i: int, path: Path) -> np.ndarray:
        text = "\n".join(line for _, line in checked_lines(path, f"episodes.files[{i}]"))
        ids = np.asarray(self.tokenizer.tokenizer.encode(text, add_special_tokens=False).ids, dtype=np.int64)
        need = self.cfg.rows * self.cfg.max_length
        if len(ids) < need:
            raise InputError(
                f"episodes.files[{i}]: {path} has {len(ids)} tokens, fewer than the (support_rows + query_rows) x "
                f"max_length = {need} one episode reads; give a longer file or lower those settings"
            )
        return ids

    def _rows(self, name: str, rng: np.random.Generator) -> list[list[int]]:
        cfg = self.cfg
        if cfg.source == "people":
            person = self.domains[name]
            indices = rng.choice(100_000, cfg.rows, replace=False)
            texts = [self.world.person_document(person, int(i)).text for i in indices]
            encoded = self.tokenizer.tokenizer.encode_batch(texts, add_special_tokens=False)
            return [[*e.ids[: cfg.max_length - 1], self.sep_id] for e in encoded]
        tokens = self.file_tokens[name]
        span = cfg.rows * cfg.max_length
        start = int(rng.integers(0, len(tokens) - span + 1))
        return [tokens[start + r * cfg.max_length : start + (r + 1) * cfg.max_length].tolist() for r in range(cfg.rows)]

    def episode(self, seed: int, pool: str, index: int) -> Episode:
        rng = np.random.default_rng([seed, POOLS.index(pool), index])
        names = self.pools.pool(pool)
        name = names[int(rng.integers(len(names)))]
        rows = self._rows(name, rng)
        support, query = rows[: self.cfg.support_rows], rows[self.cfg.support_rows :]
        return Episode(pool, index, [name], lm_batch(support, self.pad_id), lm_batch(query, self.pad_id))

    def describe(self) -> str:
        c, p = self.cfg, self.pools
        return (
            f"one {c.source} domain each, {c.support_rows} support + {c.query_rows} query rows of <= {c.max_length} "
            f"tokens; pools of {len(p.train)} / {len(p.val)} / {len(p.test)} domains (meta-train / val / test)"
        )
