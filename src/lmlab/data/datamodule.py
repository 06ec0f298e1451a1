"""The LightningDataModule for pretraining: corpus -> tokenizer -> token cache -> packed blocks -> batches."""

from __future__ import annotations

import os
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from torch.utils.data import DataLoader

from lmlab.data.blocks import BlockDataset, EpochSampler, PackedBlocks, Transform, collate
from lmlab.data.config import DataConfig
from lmlab.data.corpus import build_corpus
from lmlab.data.token_cache import TokenArray, load_or_build
from lmlab.data.tokenizer import PAD, TrainedTokenizer, load_or_train_tokenizer
from lmlab.errors import InputError


class ResumableLoader(DataLoader):
    """A DataLoader whose position Lightning saves in checkpoints and restores on resume (mid-epoch too)."""

    def __init__(
        self, progress: Callable[[], tuple[int, int]], dataset: Any, sampler: EpochSampler, **kwargs: Any
    ) -> None:
        super().__init__(dataset, sampler=sampler, **kwargs)
        self.progress = progress
        self.epoch_sampler = sampler

    def state_dict(self) -> dict[str, int]:
        epoch, batches_done = self.progress()
        return {"epoch": epoch, "batches_done": batches_done}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.epoch_sampler.resume_at(state["epoch"], state["batches_done"])


class PretrainDataModule(pl.LightningDataModule):
    """`prepare()` does the one-off work eagerly (the model's vocabulary depends on it); loaders are cheap."""

    def __init__(self, cfg: DataConfig, cache_dir: Path, seed: int) -> None:
        super().__init__()
        cfg.validate()
        self.cfg = cfg
        self.cache_dir = Path(cache_dir)
        self.seed = seed
        self.tokenizer: TrainedTokenizer | None = None
        self.corpus_fingerprint = ""
        self.splits: dict[str, TokenArray] = {}
        self._transform: Transform | None = None

    def prepare(self, splits: tuple[str, ...] = ("train", "validation")) -> TrainedTokenizer:
        """Tokenizer and token caches of `splits` (evaluation needs only the validation split's)."""
        corpus = build_corpus(self.cfg, self.cache_dir / "hf")
        self.corpus_fingerprint = corpus.fingerprint
        self.tokenizer = load_or_train_tokenizer(corpus, self.cfg.tokenizer, self.cache_dir)
        self.splits = {
            s: load_or_build(corpus, self.tokenizer, s, self.cache_dir, self.cfg.tokenize, self.cfg.token_limit(s))
            for s in splits
        }
        if "train" in splits:
            self._check_batch_fits(len(self.blocks("train")))
        # Batches are memmap slices from here on; forked loader workers must not inherit tokenizer threads.
        os.environ["TOKENIZERS_PARALLELISM"] = "false"
        return self.tokenizer

    def _check_batch_fits(self, n_blocks: int) -> None:
        """Refuse a batch larger than the training split (it would be the whole split in one step) or one whose
        output logits alone would not fit in this machine's memory, before any of it is allocated."""
        assert self.tokenizer is not None
        batch, block = self.cfg.batch_size, self.cfg.block_size
        logits_gib = batch * block * self.tokenizer.vocab_size * 4 / 2**30
        memory_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
        if batch > n_blocks or logits_gib > memory_gib:
            raise InputError(
                f"data.batch_size={batch} is larger than {'the training split' if batch > n_blocks else 'memory'}: "
                f"a step of {batch} blocks of {block} tokens would need {logits_gib:,.1f} GiB for its output logits "
                f"alone (vocabulary {self.tokenizer.vocab_size}; this machine has {memory_gib:,.1f} GiB) and the "
                f"training split holds {n_blocks} blocks; lower data.batch_size (at most {n_blocks})"
            )

    def set_transform(self, transform: Transform) -> None:
        self._transform = transform

    def blocks(self, split: str) -> PackedBlocks:
        assert self.tokenizer is not None, "call prepare() first"
        return PackedBlocks(self.splits[split].stream, self.cfg.block_size, self.tokenizer.token_id(PAD))

    def _loader(self, split: str) -> DataLoader:
        if self._transform is None:
            raise RuntimeError("PretrainDataModule needs the objective's transform (set_transform) before loading")
        dataset = BlockDataset(self.blocks(split), self._transform, self.seed)
        trainer = self.trainer
        rank, world = (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)
        sampler = EpochSampler(
            len(dataset),
            self.seed,
            shuffle=split == "train",
            rank=rank,
            world_size=world,
            batch_size=self.cfg.batch_size,
        )
        workers = self.cfg.num_workers
        loader = partial(ResumableLoader, self._progress) if split == "train" else DataLoader
        return loader(
            dataset,
            batch_size=self.cfg.batch_size,
            sampler=sampler,
            collate_fn=collate,
            num_workers=workers,
            persistent_workers=workers > 0,
            pin_memory=trainer is not None and trainer.strategy.root_device.type == "cuda",
            drop_last=split == "train" and len(dataset) >= self.cfg.batch_size,
        )

    def _progress(self) -> tuple[int, int]:
        """(epoch, batches of it trained): optimiser steps are the truth, whatever the loader prefetched."""
        trainer = self.trainer
        assert trainer is not None
        per_epoch = int(trainer.num_training_batches)
        done = trainer.global_step * trainer.accumulate_grad_batches
        return done // per_epoch, done % per_epoch

    def train_dataloader(self) -> DataLoader:
        return self._loader("train")

    def val_dataloader(self) -> DataLoader:
        return self._loader("validation")
