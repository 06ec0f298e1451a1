"""Packed fixed-length blocks cut from a token stream, and the dataset that applies an objective to them."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

# An objective's batch transform: (block of token ids, rng) -> named arrays of one example.
Transform = Callable[[np.ndarray, np.random.Generator], dict[str, np.ndarray]]


class PackedBlocks:
    """Consecutive `block_size` slices of the stream; together they hold every token exactly once.

    Documents are packed back to back (each ends with [SEP]), so no block is padded except the last,
    which is padded with `pad_id` when the stream does not divide evenly.
    """

    def __init__(self, tokens: np.ndarray, block_size: int, pad_id: int) -> None:
        if len(tokens) == 0:
            raise ValueError("cannot cut blocks from an empty token stream")
        self.tokens = tokens
        self.block_size = block_size
        self.pad_id = pad_id

    def __len__(self) -> int:
        return -(-len(self.tokens) // self.block_size)

    def __getitem__(self, index: int) -> tuple[np.ndarray, int]:
        """The block's ids (int64, length block_size) and how many of them are real tokens."""
        start = index * self.block_size
        real = np.asarray(self.tokens[start : start + self.block_size], dtype=np.int64)
        if len(real) == self.block_size:
            return real, self.block_size
        padded = np.full(self.block_size, self.pad_id, dtype=np.int64)
        padded[: len(real)] = real
        return padded, len(real)


def example_rng(seed: int, epoch: int, index: int) -> np.random.Generator:
    """The only source of randomness in a batch transform: a pure function of (seed, epoch, index)."""
    return np.random.default_rng([seed, epoch, index])


class BlockDataset(Dataset):
    """Indexed by (epoch, index) pairs from `EpochSampler`, so transforms are reproducible and resumable."""

    def __init__(self, blocks: PackedBlocks, transform: Transform, seed: int) -> None:
        self.blocks = blocks
        self.transform = transform
        self.seed = seed

    def __len__(self) -> int:
        return len(self.blocks)

    def __getitem__(self, key: tuple[int, int]) -> dict[str, np.ndarray]:
        epoch, index = key
        ids, n_real = self.blocks[index]
        example = self.transform(ids, example_rng(self.seed, epoch, index))
        example["n_real"] = np.asarray(n_real)
        return example


class EpochSampler(Sampler):
    """Yields (epoch, index). The order is a pure function of (seed, epoch); Lightning calls `set_epoch`.

    With several processes each rank takes every world_size-th index of the same permutation.
    """

    def __init__(self, length: int, seed: int, shuffle: bool, rank: int = 0, world_size: int = 1) -> None:
        self.length = length
        self.seed = seed
        self.shuffle = shuffle
        self.rank = rank
        self.world_size = world_size
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(range(self.rank, self.length, self.world_size))

    def __iter__(self) -> Iterator[tuple[int, int]]:
        order = (
            np.random.default_rng([self.seed, self.epoch]).permutation(self.length)
            if self.shuffle
            else np.arange(self.length)
        )
        epoch = self.epoch if self.shuffle else 0
        for index in order[self.rank :: self.world_size]:
            yield epoch, int(index)


def collate(examples: Sequence[dict[str, np.ndarray]]) -> dict[str, torch.Tensor]:
    """Stack examples; add `padding_mask` only when some block is padded, so full batches keep flash attention."""
    batch = {key: torch.from_numpy(np.stack([e[key] for e in examples])) for key in examples[0] if key != "n_real"}
    n_real = torch.as_tensor([int(e["n_real"]) for e in examples])
    seq_len = batch["input_ids"].shape[1]
    if bool((n_real < seq_len).any()):
        batch["padding_mask"] = torch.arange(seq_len)[None, :] < n_real[:, None]
    batch["n_tokens"] = n_real.sum()
    return batch
