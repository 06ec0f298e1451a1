"""The global torch random state (dropout, sampling) saved in every checkpoint and restored on resume, so a
resumed run draws the same numbers as an uninterrupted one. It is restored just before the first training batch,
not at load time: creating data-loader iterators draws from the same generator. Data randomness needs no
state: it is derived from (seed, epoch, index)."""

from __future__ import annotations

from typing import Any

import torch
from pytorch_lightning.callbacks import Callback


class RngState(Callback):
    def __init__(self) -> None:
        self._pending: dict[str, Any] | None = None

    def state_dict(self) -> dict[str, Any]:
        state: dict[str, Any] = {"torch": torch.get_rng_state()}
        if torch.cuda.is_available():
            state["cuda"] = torch.cuda.get_rng_state_all()
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._pending = state_dict

    def on_train_batch_start(self, *args: Any) -> None:
        if self._pending is None:
            return
        torch.set_rng_state(self._pending["torch"])
        if "cuda" in self._pending and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(self._pending["cuda"])
        self._pending = None
