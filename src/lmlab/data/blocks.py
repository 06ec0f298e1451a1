"""Packed fixed-length blocks cut from a token stream, and the dataset that applies an objective to them."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from lmlab.errors import InputError

# Shards a stream keeps open at once (3 open files each: tokens, document and sentence starts).
MAX_OPEN_SHARDS = 128


@dataclass(frozen=True)
class TokenStream:
    """One run of documents as a flat token array, with where its documents and sentences start (sorted positions).

    A split's token cache is a sequence of these (`ShardedStream`); both read alike.
    """

    tokens: np.ndarray
    document_starts: np.ndarray
    sentence_starts: np.ndarray

    @classmethod
    def single_document(cls, tokens: np.ndarray, sentence_starts: Sequence[int] = (0,)) -> TokenStream:
        return cls(tokens, np.zeros(1, dtype=np.int64), np.asarray(sentence_starts, dtype=np.int64))

    @property
    def n_tokens(self) -> int:
        return len(self.tokens)

    @property
    def n_documents(self) -> int:
        return len(self.document_starts)

    def slice(self, start: int, end: int) -> np.ndarray:
        """Tokens [start, end) as int64."""
        return np.asarray(self.tokens[start:end], dtype=np.int64)

    def document_start(self, index: int) -> int:
        return int(self.document_starts[index])

    def document_index(self, position: int) -> int:
        """The document holding `position`."""
        return int(np.searchsorted(self.document_starts, position, side="right")) - 1

    def document_bounds(self, position: int) -> tuple[int, int]:
        """[start, end) of the document holding `position`."""
        doc = self.document_index(position)
        end = self.document_starts[doc + 1] if doc + 1 < len(self.document_starts) else len(self.tokens)
        return int(self.document_starts[doc]), int(end)

    def sentences_between(self, start: int, end: int) -> np.ndarray:
        """Start positions of the sentences that start in [start, end)."""
        lo, hi = np.searchsorted(self.sentence_starts, [start, end], side="left")
        return np.asarray(self.sentence_starts[lo:hi], dtype=np.int64)


class ShardedStream:
    """Streams read one after another as one: positions run on across them. Documents never straddle two, so each
    question about a document or its sentences is answered by one stream (and reads only its pages of a memmap).

    A shard is opened (`open_shard(k)`) when first read, and the least recently read one is closed again once more
    than `max_open` are open: a run reads a cache of any number of shards with a bounded number of open files and
    mapped pages."""

    def __init__(
        self,
        counts: Sequence[tuple[int, int]],
        open_shard: Callable[[int], TokenStream],
        max_open: int = MAX_OPEN_SHARDS,
    ) -> None:
        """`counts`: (tokens, documents) of each shard, in order."""
        self.n_shards = len(counts)
        self.bases = np.cumsum([0] + [n_tokens for n_tokens, _ in counts])
        self.document_bases = np.cumsum([0] + [n_documents for _, n_documents in counts])
        self.max_open = max_open
        self._open_shard = open_shard
        self._open: OrderedDict[int, TokenStream] = OrderedDict()

    @classmethod
    def of(cls, streams: Sequence[TokenStream], max_open: int = MAX_OPEN_SHARDS) -> ShardedStream:
        """Streams in memory, read as one."""
        return cls([(s.n_tokens, s.n_documents) for s in streams], list(streams).__getitem__, max_open)

    def shard(self, k: int) -> TokenStream:
        stream = self._open.pop(k, None)
        if stream is None:
            stream = self._open_shard(k)
            while len(self._open) >= self.max_open:
                self._open.popitem(last=False)
        self._open[k] = stream
        return stream

    def __getstate__(self) -> dict:
        """A copy for another process (a loader worker) opens its own shards."""
        return {**self.__dict__, "_open": OrderedDict()}

    @property
    def n_tokens(self) -> int:
        return int(self.bases[-1])

    @property
    def n_documents(self) -> int:
        return int(self.document_bases[-1])

    def _at(self, position: int) -> int:
        return int(np.searchsorted(self.bases, position, side="right")) - 1

    def slice(self, start: int, end: int) -> np.ndarray:
        end = min(end, self.n_tokens)
        pieces = []
        while start < end:
            k = self._at(start)
            base = int(self.bases[k])
            piece = self.shard(k).slice(start - base, end - base)
            pieces.append(piece)
            start += len(piece)
        return np.concatenate(pieces) if pieces else np.zeros(0, dtype=np.int64)

    def document_start(self, index: int) -> int:
        k = int(np.searchsorted(self.document_bases, index, side="right")) - 1
        return int(self.bases[k]) + self.shard(k).document_start(index - int(self.document_bases[k]))

    def document_index(self, position: int) -> int:
        k = self._at(position)
        return int(self.document_bases[k]) + self.shard(k).document_index(position - int(self.bases[k]))

    def document_bounds(self, position: int) -> tuple[int, int]:
        k = self._at(position)
        base = int(self.bases[k])
        start, end = self.shard(k).document_bounds(position - base)
        return start + base, end + base

    def sentences_between(self, start: int, end: int) -> np.ndarray:
        found = [np.zeros(0, dtype=np.int64)]
        for k in range(self._at(start), self.n_shards):
            base = int(self.bases[k])
            if base >= end:
                break
            found.append(self.shard(k).sentences_between(max(start - base, 0), end - base) + base)
        return np.concatenate(found)


Stream = TokenStream | ShardedStream


@dataclass(frozen=True)
class Block:
    """One packed block handed to an objective's transform.

    Most objectives only read `ids`; sentence-level ones also look at `stream` around `start`. `batch_key` is
    (seed, epoch, batch number), the same for every example of a batch (a mixture samples its objective from it).
    """

    ids: np.ndarray  # int64, block_size long, padded with the pad id after n_real
    n_real: int
    start: int  # position of ids[0] in the stream
    stream: Stream
    batch_key: tuple[int, int, int] = (0, 0, 0)

    @classmethod
    def of(cls, ids: np.ndarray, n_real: int | None = None) -> Block:
        """A standalone block (its own one-document stream), e.g. for inspecting a transform."""
        ids = np.asarray(ids, dtype=np.int64)
        n = len(ids) if n_real is None else n_real
        return cls(ids, n, 0, TokenStream.single_document(ids[:n]))

    def sentence_starts(self) -> np.ndarray:
        """Positions within the block (0 included) where a sentence or a document starts."""
        inside = self.stream.sentences_between(self.start + 1, self.start + self.n_real) - self.start
        return np.concatenate([[0], inside]).astype(np.int64)


# An objective's batch transform: (block, rng) -> named arrays of one example.
Transform = Callable[[Block, np.random.Generator], dict[str, np.ndarray]]


class PackedBlocks:
    """Consecutive `block_size` slices of the stream; together they hold every token exactly once.

    Documents are packed back to back (each ends with [SEP]), so no block is padded except the last,
    which is padded with `pad_id` when the stream does not divide evenly.
    """

    def __init__(self, stream: Stream, block_size: int, pad_id: int) -> None:
        if stream.n_tokens == 0:
            raise InputError("cannot cut blocks from an empty token stream")
        self.stream = stream
        self.block_size = block_size
        self.pad_id = pad_id

    def __len__(self) -> int:
        return -(-self.stream.n_tokens // self.block_size)

    def __getitem__(self, index: int) -> Block:
        start = index * self.block_size
        real = self.stream.slice(start, start + self.block_size)
        ids = real
        if len(real) < self.block_size:
            ids = np.full(self.block_size, self.pad_id, dtype=np.int64)
            ids[: len(real)] = real
        return Block(ids, len(real), start, self.stream)


def example_rng(seed: int, epoch: int, index: int) -> np.random.Generator:
    """The only source of randomness in a batch transform: a pure function of (seed, epoch, index)."""
    return np.random.default_rng([seed, epoch, index])


class BlockDataset(Dataset):
    """Indexed by (epoch, index, batch) keys from `EpochSampler`, so transforms are reproducible and resumable.

    A transform may set `n_real` (its own count of real input positions, for the padding mask); `n_tokens` is
    always the block's count of real tokens, what throughput counts.
    """

    def __init__(self, blocks: PackedBlocks, transform: Transform, seed: int) -> None:
        self.blocks = blocks
        self.transform = transform
        self.seed = seed

    def __len__(self) -> int:
        return len(self.blocks)

    def __getitem__(self, key: tuple[int, int, int]) -> dict[str, np.ndarray]:
        epoch, index, batch = key
        block = replace(self.blocks[index], batch_key=(self.seed, epoch, batch))
        example = self.transform(block, example_rng(self.seed, epoch, index))
        example.setdefault("n_real", np.asarray(block.n_real))
        example["n_tokens"] = np.asarray(block.n_real)
        return example


class EpochSampler(Sampler):
    """Yields (epoch, index, batch number). The order is a pure function of (seed, epoch); Lightning calls
    `set_epoch`. The batch number (position // batch_size) lets a transform make one choice per batch.

    With several processes rank r owns the r-th of world_size equal, contiguous parts of the blocks, and so reads
    only the shards of the cache that hold them; each epoch it takes its part in the shuffled order. The parts are
    equal (the last length % world_size blocks are left out) because every rank must run the same number of steps:
    DDP's and FSDP's collectives wait for all of them.
    """

    def __init__(
        self, length: int, seed: int, shuffle: bool, rank: int = 0, world_size: int = 1, batch_size: int = 1
    ) -> None:
        self.length = length
        self.batch_size = batch_size
        self.seed = seed
        self.shuffle = shuffle
        self.rank = rank
        self.world_size = world_size
        self.epoch = 0
        self._resume: tuple[int, int] | None = None

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def resume_at(self, epoch: int, batches_done: int) -> None:
        """Continue `epoch` after its first `batches_done` batches: the next iteration of that epoch skips them."""
        self.epoch = epoch
        self._resume = (epoch, batches_done)

    def __len__(self) -> int:
        return self.length // self.world_size

    def __iter__(self) -> Iterator[tuple[int, int, int]]:
        share = len(self)
        order = np.random.default_rng([self.seed, self.epoch]).permutation(share) if self.shuffle else np.arange(share)
        epoch = self.epoch if self.shuffle else 0
        skip = self._resume[1] * self.batch_size if self._resume and self._resume[0] == self.epoch else 0
        self._resume = None
        for position, index in enumerate(order + self.rank * share):
            if position >= skip:
                yield epoch, int(index), position // self.batch_size


def collate(examples: Sequence[dict[str, np.ndarray]]) -> dict[str, torch.Tensor]:
    """Stack examples; add `padding_mask` only when some block is padded, so full batches keep flash attention."""
    counts = ("n_real", "n_tokens")
    batch = {key: torch.from_numpy(np.stack([e[key] for e in examples])) for key in examples[0] if key not in counts}
    n_real = torch.as_tensor([int(e["n_real"]) for e in examples])
    seq_len = batch["input_ids"].shape[1]
    if bool((n_real < seq_len).any()):
        batch["padding_mask"] = torch.arange(seq_len)[None, :] < n_real[:, None]
    batch["n_tokens"] = torch.as_tensor(sum(int(e["n_tokens"]) for e in examples))
    return batch
