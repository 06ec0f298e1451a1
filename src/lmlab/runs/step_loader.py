"""A loader of items 0, 1, 2, ... in batches of one optimiser step each (fine-tuning examples, meta-learning
episodes, RL prompts), whose position Lightning saves in checkpoints: a resumed run continues with the item after
the last one a step used."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
from torch.utils.data import DataLoader, Dataset, Sampler


class FromIndex(Sampler[int]):
    """0, 1, 2, ... in order, starting where a resumed run left off."""

    def __init__(self, length: int) -> None:
        self.length = length
        self.start = 0

    def __len__(self) -> int:
        # The whole length, also after a resume: Lightning counts the epoch's batches from the restored batch index,
        # so a length less the items done would end the epoch early and start it again from item 0.
        return self.length

    def __iter__(self) -> Iterator[int]:
        start, self.start = self.start, 0
        return iter(range(start, self.length))


class ExampleStream(Dataset):
    """Item i of `length`: one of `items`, each pass over them in a fresh order drawn from (seed, pass), so the
    order is a function of the seed and the position alone."""

    def __init__(self, items: Sequence[Any], length: int, seed: int) -> None:
        self.items, self.length, self.seed = items, length, seed

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> Any:
        n = len(self.items)
        order = np.random.default_rng([self.seed, index // n]).permutation(n)
        return self.items[int(order[index % n])]


class StepLoader(DataLoader):
    """`per_step` items per batch (`collate`d; by default as a list); `steps_done` reads the trainer's optimiser
    steps."""

    def __init__(
        self,
        dataset: Dataset,
        per_step: int,
        steps_done: Callable[[], int],
        *,
        collate: Callable[[list[Any]], Any] = list,
    ) -> None:
        self.from_index = FromIndex(len(dataset))  # type: ignore[arg-type]
        super().__init__(dataset, batch_size=per_step, sampler=self.from_index, collate_fn=collate)
        self.steps_done = steps_done

    def state_dict(self) -> dict[str, int]:
        return {"items_done": self.steps_done() * (self.batch_size or 1)}

    def load_state_dict(self, state: dict[str, int]) -> None:
        # "episodes_done": the key meta-learning checkpoints written before this loader was shared carry.
        self.from_index.start = state["items_done"] if "items_done" in state else state["episodes_done"]
