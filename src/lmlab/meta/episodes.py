"""Episodes, and the few-shot class episodes: N-way K-shot support sets and Q queries per class, drawn from
disjoint class pools.

An episode source splits its tasks (classes here; text domains in `meta/domains.py`) once, by
`episodes.split_seed`, into disjoint meta-train / meta-val / meta-test pools, and makes episode `index` of a pool as
a pure function of (seed, pool, index). For class episodes a source (the synthetic world's topic terms, a labelled
file, or unlabelled text as cloze classes) gives a bank of texts per class; an episode picks N classes, their order
(the episode's labels, so labels are re-permuted every episode) and K + Q examples of each.
"""

from __future__ import annotations

import re
import zlib
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset

from lmlab.config_schema import at_least, choice, require_file
from lmlab.data.config import WorldConfig
from lmlab.data.synthetic import TERMS, World
from lmlab.data.text_files import checked_lines
from lmlab.data.tokenizer import CLS, MASK, PAD, SEP, TrainedTokenizer, special_tokens_read
from lmlab.errors import InputError
from lmlab.heads import IGNORE
from lmlab.runs.step_loader import StepLoader
from lmlab.tasks.classification import read_classification

SOURCES = ("synthetic", "files", "cloze")
POOLS = ("train", "val", "test")


@dataclass
class PoolSplitConfig:
    """How an episode source's tasks (classes, domains) split into pools, and where evaluation episodes come from."""

    # The share of tasks in the meta-train and meta-val pools (meta-test gets the rest), split by split_seed.
    train_fraction: float = 0.6
    val_fraction: float = 0.2
    split_seed: int = 0
    # Meta-val and meta-test episodes come from this seed, not the run's: every method and seed sees the same ones.
    eval_seed: int = 1234

    def validate(self) -> None:
        if not (
            0 < self.train_fraction < 1 and 0 < self.val_fraction < 1 and self.train_fraction + self.val_fraction < 1
        ):
            raise InputError(
                f"episodes.train_fraction={self.train_fraction} and episodes.val_fraction={self.val_fraction} must be "
                "in (0, 1) and leave tasks for meta-test (their sum < 1)"
            )


@dataclass
class EpisodeConfig(PoolSplitConfig):
    """Where the classes come from and the episode shape."""

    kind: str = "classes"
    name: str = "synthetic_topic"
    # synthetic: the synthetic world's topic terms (253 fine-grained classes); files: a labelled csv/tsv/jsonl;
    # cloze: words of unlabelled text files (a class = a word, its examples = sentences with the word masked).
    source: str = "synthetic"
    n_way: int = 5
    k_shot: int = 5
    q_query: int = 10
    max_length: int = 48
    # synthetic: sentences per term
    world: WorldConfig = field(default_factory=WorldConfig)
    examples_per_class: int = 40
    # files
    train_file: str = ""
    text_column: str = "text"
    label_column: str = "label"
    tsv_quoting: bool = False
    # files, cloze: classes with fewer than k_shot + q_query examples are an error, unless dropped on purpose
    # (the dropped classes are logged and recorded with the run)
    drop_small_classes: bool = False
    # cloze
    files: list[str] = field(default_factory=list)
    cloze_skip_frequent: int = 100  # the most frequent words are not classes (function words)
    cloze_max_classes: int = 300

    def validate(self) -> None:
        super().validate()
        choice("episodes.source", self.source, SOURCES)
        at_least("episodes.n_way", self.n_way, 2)
        at_least("episodes.k_shot", self.k_shot, 1)
        at_least("episodes.q_query", self.q_query, 1)
        at_least("episodes.max_length", self.max_length, 4)
        at_least("episodes.cloze_skip_frequent", self.cloze_skip_frequent, 0)
        at_least("episodes.cloze_max_classes", self.cloze_max_classes, 1)
        if self.source == "synthetic":
            at_least("episodes.examples_per_class", self.examples_per_class, self.k_shot + self.q_query)
        if self.source == "files":
            if not self.train_file:
                raise InputError("episodes.source=files needs episodes.train_file (a labelled .csv, .tsv or .jsonl)")
            require_file(self.train_file, "episodes.train_file")
        if self.source == "cloze":
            if not self.files:
                raise InputError("episodes.source=cloze needs episodes.files (unlabelled text files)")
            for i, path in enumerate(self.files):
                require_file(path, f"episodes.files[{i}]")
        elif self.files:
            raise InputError(f"episodes.files is for episodes.source=cloze; it would be ignored with {self.source}")

    @property
    def shots(self) -> int:
        return self.k_shot + self.q_query


def class_texts(cfg: EpisodeConfig) -> dict[str, list[str]]:
    """Every class's texts, as the source gives them (insertion order is the source's)."""
    if cfg.source == "synthetic":
        w = cfg.world
        world = World(w.seed, n_people=w.people, n_places=w.places, n_orgs=w.organisations)
        return {term: [world.term_sentence(term, i) for i in range(cfg.examples_per_class)] for term in TERMS}
    if cfg.source == "files":
        path = Path(cfg.train_file).expanduser()
        texts: dict[str, list[str]] = {}
        for example in read_classification(path, cfg.text_column, cfg.label_column, None, cfg.tsv_quoting):
            texts.setdefault(example.label, []).append(example.text)
        return texts
    return cloze_classes(
        [Path(p).expanduser() for p in cfg.files], cfg.shots, cfg.cloze_skip_frequent, cfg.cloze_max_classes
    )


_SENTENCE_END = re.compile(r"(?<=[.!?])\s+|\n+")
_WORD = re.compile(r"[A-Za-z]{3,}")


def cloze_classes(paths: list[Path], needed: int, skip_frequent: int, max_classes: int) -> dict[str, list[str]]:
    """SMLMT-style classes from unlabelled text: a class is a word, its examples are sentences containing it with
    every occurrence replaced by [MASK]. The `skip_frequent` most frequent words are left out; of the rest, the
    most frequent `max_classes` words that occur in at least `needed` sentences become classes."""
    sentences = []
    for path in paths:
        text = "\n".join(line for _, line in checked_lines(path, "episodes.files"))
        sentences += [s.strip() for s in _SENTENCE_END.split(text) if len(s.split()) >= 4]
    containing: dict[str, list[int]] = {}
    for i, sentence in enumerate(sentences):
        for word in {w.lower() for w in _WORD.findall(sentence)}:
            containing.setdefault(word, []).append(i)
    counts = Counter({word: len(ids) for word, ids in containing.items()})
    ranked = [word for word, _ in counts.most_common()][skip_frequent:]
    words = [w for w in ranked if counts[w] >= needed][:max_classes]
    classes = {}
    for word in words:
        pattern = re.compile(rf"\b{re.escape(word)}\b", re.IGNORECASE)
        classes[word] = [pattern.sub(MASK, sentences[i]) for i in containing[word]]
    if not classes:
        raise InputError(
            f"episodes.files ({[str(p) for p in paths]}): no word outside the {skip_frequent} most frequent occurs in "
            f"{needed} sentences (k_shot + q_query); give more text or lower the episode size"
        )
    return classes


@dataclass
class Pools:
    """The tasks (classes, domains) of each pool, sorted, and any dropped for having too few examples."""

    train: list[str]
    val: list[str]
    test: list[str]
    dropped: dict[str, int]

    def pool(self, name: str) -> list[str]:
        return {"train": self.train, "val": self.val, "test": self.test}[name]


def split_pools(cfg: EpisodeConfig, texts: dict[str, list[str]]) -> Pools:
    """Disjoint meta-train / meta-val / meta-test pools; every class must have k_shot + q_query examples and every
    pool n_way classes."""
    small = {name: len(t) for name, t in texts.items() if len(t) < cfg.shots}
    if small and not cfg.drop_small_classes:
        listed = ", ".join(f"{name!r} ({n})" for name, n in sorted(small.items())[:10])
        more = f" and {len(small) - 10} more" if len(small) > 10 else ""
        raise InputError(
            f"episodes: {len(small)} class(es) have fewer than k_shot + q_query = {cfg.shots} examples: "
            f"{listed}{more}. Lower episodes.k_shot/q_query, or set episodes.drop_small_classes=true to leave "
            "them out (recorded)"
        )
    names = sorted(name for name in texts if name not in small)
    return split_names(names, cfg.train_fraction, cfg.val_fraction, cfg.split_seed, cfg.n_way, small, "classes")


def split_names(
    names: list[str],
    train_fraction: float,
    val_fraction: float,
    split_seed: int,
    least: int,
    dropped: dict[str, int],
    what: str,
) -> Pools:
    """`names` shuffled by `split_seed` into disjoint pools of the given shares; each pool needs `least` names."""
    order = np.random.default_rng(split_seed).permutation(len(names))
    shuffled = [names[i] for i in order]
    n_train = int(round(train_fraction * len(names)))
    n_val = int(round(val_fraction * len(names)))
    pools = Pools(
        sorted(shuffled[:n_train]),
        sorted(shuffled[n_train : n_train + n_val]),
        sorted(shuffled[n_train + n_val :]),
        dropped,
    )
    for pool in POOLS:
        if len(pools.pool(pool)) < least:
            need = f"episodes.n_way={least}; lower n_way or" if what == "classes" else f"{least}; give more {what} or"
            raise InputError(
                f"episodes: the meta-{pool} pool has {len(pools.pool(pool))} {what} of {len(names)}, fewer than "
                f"{need} change episodes.train_fraction/val_fraction"
            )
    return pools


@dataclass
class Episode:
    """One few-shot task. `classes` are the pool's class names in label order (label i = classes[i]); support and
    query hold `input_ids`, `padding_mask`, `n_real` and `label` (support: class-major, k_shot per class)."""

    pool: str
    index: int
    classes: list[str]
    support: dict[str, torch.Tensor]
    query: dict[str, torch.Tensor]

    def whole(self) -> dict[str, torch.Tensor]:
        """Support and query as one batch (padded to the wider of the two)."""
        width = max(self.support["input_ids"].shape[1], self.query["input_ids"].shape[1])
        out = {}
        for key in self.support:
            parts = []
            for part in (self.support[key], self.query[key]):
                if part.dim() == 2 and part.shape[1] < width:
                    fill = IGNORE if key == "labels" else 0
                    pad = torch.full((part.shape[0], width - part.shape[1]), fill, dtype=part.dtype, device=part.device)
                    part = torch.cat([part, pad], 1)
                parts.append(part)
            out[key] = torch.cat(parts)
        return out

    def to(self, device: torch.device) -> Episode:
        support, query = ({k: v.to(device) for k, v in part.items()} for part in (self.support, self.query))
        return Episode(self.pool, self.index, self.classes, support, query)


class EncodedClasses:
    """Every class's texts tokenized once: [CLS] text [SEP], padded to max_length."""

    def __init__(self, texts: dict[str, list[str]], tokenizer: TrainedTokenizer, max_length: int) -> None:
        cls_id, sep_id, pad_id = (tokenizer.token_id(t) for t in (CLS, SEP, PAD))
        self.ids: dict[str, np.ndarray] = {}
        self.n_real: dict[str, np.ndarray] = {}
        for name, class_texts_ in texts.items():
            with special_tokens_read(tokenizer.tokenizer):  # the [MASK] a cloze episode puts in its text
                encoded = tokenizer.tokenizer.encode_batch(class_texts_, add_special_tokens=False)
            ids = np.full((len(encoded), max_length), pad_id, dtype=np.int64)
            n_real = np.empty(len(encoded), dtype=np.int64)
            for row, enc in enumerate(encoded):
                tokens = [cls_id, *enc.ids[: max_length - 2], sep_id]
                ids[row, : len(tokens)] = tokens
                n_real[row] = len(tokens)
            self.ids[name], self.n_real[name] = ids, n_real


_POOL_CODE = {pool: i for i, pool in enumerate(POOLS)}


def sample_episode(
    cfg: EpisodeConfig, pools: Pools, encoded: EncodedClasses, seed: int, pool: str, index: int
) -> Episode:
    """Episode `index` of `pool`: a pure function of (seed, pool, index) and the pools."""
    rng = np.random.default_rng([seed, _POOL_CODE[pool], index])
    names = pools.pool(pool)
    classes = [names[i] for i in rng.choice(len(names), cfg.n_way, replace=False)]
    parts: dict[str, list[np.ndarray]] = {"s_ids": [], "s_real": [], "q_ids": [], "q_real": []}
    for name in classes:
        rows = rng.choice(len(encoded.ids[name]), cfg.shots, replace=False)
        support, query = rows[: cfg.k_shot], rows[cfg.k_shot :]
        parts["s_ids"].append(encoded.ids[name][support])
        parts["s_real"].append(encoded.n_real[name][support])
        parts["q_ids"].append(encoded.ids[name][query])
        parts["q_real"].append(encoded.n_real[name][query])

    def batch(ids: list[np.ndarray], n_real: list[np.ndarray], per_class: int) -> dict[str, torch.Tensor]:
        n = torch.from_numpy(np.concatenate(n_real))
        tokens = torch.from_numpy(np.concatenate(ids))
        width = int(n.max())  # trim the padding every example of the episode shares
        return {
            "input_ids": tokens[:, :width],
            "n_real": n,
            "padding_mask": torch.arange(width)[None, :] < n[:, None],
            "label": torch.arange(cfg.n_way).repeat_interleave(per_class),
        }

    return Episode(
        pool,
        index,
        classes,
        batch(parts["s_ids"], parts["s_real"], cfg.k_shot),
        batch(parts["q_ids"], parts["q_real"], cfg.q_query),
    )


class EpisodeSource(Protocol):
    """Tasks split into pools, and episode `index` of a pool as a pure function of (seed, pool, index)."""

    pools: Pools
    eval_seed: int

    def episode(self, seed: int, pool: str, index: int) -> Episode: ...

    def describe(self) -> str: ...


class ClassEpisodes:
    """N-way K-shot episodes of the configured classes, tokenized once."""

    def __init__(self, cfg: EpisodeConfig, tokenizer: TrainedTokenizer) -> None:
        cfg.validate()
        texts = class_texts(cfg)
        self.cfg, self.eval_seed = cfg, cfg.eval_seed
        self.pools = split_pools(cfg, texts)
        self.encoded = EncodedClasses(texts, tokenizer, cfg.max_length)

    def episode(self, seed: int, pool: str, index: int) -> Episode:
        return sample_episode(self.cfg, self.pools, self.encoded, seed, pool, index)

    def describe(self) -> str:
        c, p = self.cfg, self.pools
        dropped = f"; {len(p.dropped)} classes dropped as too small" if p.dropped else ""
        return (
            f"{c.n_way}-way {c.k_shot}-shot, {c.q_query} queries per class; pools of {len(p.train)} / {len(p.val)} / "
            f"{len(p.test)} classes (meta-train / val / test){dropped}"
        )


class EpisodeSet(Dataset):
    """Episodes `[0, length)` of one pool."""

    def __init__(self, source: EpisodeSource, seed: int, pool: str, length: int) -> None:
        self.source, self.seed, self.pool, self.length = source, seed, pool, length

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> Episode:
        return self.source.episode(self.seed, self.pool, index)


class EpisodeDataModule(pl.LightningDataModule):
    """Meta-training episodes (the run's seed) for `steps` optimiser steps, and meta-val episodes (eval_seed)."""

    def __init__(self, source: EpisodeSource, seed: int, steps: int, tasks_per_step: int, val_episodes: int) -> None:
        super().__init__()
        self.source, self.pools, self.seed = source, source.pools, seed
        self.steps, self.tasks_per_step, self.val_episodes = steps, tasks_per_step, val_episodes

    def episodes(self, pool: str, count: int, seed: int | None = None) -> EpisodeSet:
        return EpisodeSet(self.source, self.source.eval_seed if seed is None else seed, pool, count)

    def transfer_batch_to_device(self, batch: Any, device: torch.device, dataloader_idx: int) -> Any:
        return [episode.to(device) for episode in batch]

    def train_dataloader(self) -> DataLoader:
        trainer = self.trainer
        assert trainer is not None
        dataset = self.episodes("train", self.steps * self.tasks_per_step, seed=self.seed)
        return StepLoader(dataset, self.tasks_per_step, lambda: trainer.global_step)

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self.episodes("val", self.val_episodes), batch_size=1, collate_fn=list)


def pool_digest(pools: Pools) -> str:
    """A short fingerprint of the pools, so runs compared on 'the same meta-test classes' can be checked."""
    return f"{zlib.crc32(repr((pools.train, pools.val, pools.test)).encode()):08x}"
