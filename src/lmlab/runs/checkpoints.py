"""Checkpoints that survive a kill: written atomically, found again on restart, checked before they are used.

A checkpoint is written to a temporary file beside its target, flushed to disk and renamed over it, so a crash
mid-write leaves the previous file intact. On restart the newest checkpoint that loads (`weights_only=True`,
with the training state Lightning needs) is resumed; one that does not is renamed `*.corrupt` and the next
newest is used. Checkpoints that all fail is an error, never a silent fresh start.
"""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path
from typing import Any

import torch
from lightning_fabric.plugins.io.torch_io import TorchCheckpointIO

from lmlab.errors import InputError

log = logging.getLogger(__name__)

LAST = "last.ckpt"
_REQUIRED = ("state_dict", "global_step", "loops", "optimizer_states")


class CheckpointNotWritten(OSError):
    """A checkpoint could not be written (a full disk, say); the previous checkpoint is intact."""


class AtomicCheckpointIO(TorchCheckpointIO):
    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        try:
            with open(tmp, "wb") as f:
                torch.save(checkpoint, f)
                f.flush()
                os.fsync(f.fileno())
        except (OSError, RuntimeError) as err:
            # torch reports a failed write as RuntimeError("[enforce fail at inline_container.cc] ... file write
            # failed"): name the cause, and take the half-written file off the disk it filled.
            written = tmp.stat().st_size if tmp.exists() else 0
            tmp.unlink(missing_ok=True)
            free = shutil.disk_usage(path.parent).free
            raise CheckpointNotWritten(
                f"the checkpoint {path} could not be written after {written / 2**20:,.1f} MiB ({_first_line(err)}); "
                f"{free / 2**20:,.1f} MiB are free on its disk now. The previous checkpoint is intact: free space (or "
                "point hydra.run.dir elsewhere) and rerun the same command to resume"
            ) from err
        os.replace(tmp, path)


def _first_line(err: BaseException) -> str:
    return (str(err).splitlines() or [type(err).__name__])[0][:200]


def checkpoint_step(path: Path) -> int:
    """The global step of a complete checkpoint; ValueError naming the file if it is not one."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as err:  # truncated zip, not a checkpoint, or an object weights_only refuses
        raise InputError(f"{path} is not a loadable checkpoint: {type(err).__name__}: {err}") from err
    missing = [key for key in _REQUIRED if key not in state]
    if missing:
        raise InputError(f"{path} is incomplete: no {missing}")
    return int(state["global_step"])


def load_checkpoint_weights(path: Path) -> dict[str, torch.Tensor]:
    """The module weights a checkpoint holds (its `state_dict`), read without running code."""
    return torch.load(path, map_location="cpu", weights_only=True)["state_dict"]


def latest_checkpoint(ckpt_dir: Path) -> tuple[Path, int] | None:
    """The newest complete checkpoint in `ckpt_dir` and its step (`last.ckpt` wins a tie), or None when the
    directory holds no checkpoint at all."""
    paths = sorted(Path(ckpt_dir).glob("*.ckpt"))
    found: list[tuple[int, bool, Path]] = []
    for path in paths:
        try:
            found.append((checkpoint_step(path), path.name == LAST, path))
        except ValueError as err:
            corrupt = path.with_name(path.name + ".corrupt")
            path.rename(corrupt)
            log.warning("Skipping a broken checkpoint (kept as %s): %s", corrupt.name, err)
    if not found:
        if paths:
            raise RuntimeError(
                f"every checkpoint in {ckpt_dir} is broken ({[p.name for p in paths]}, now *.corrupt); refusing to "
                "start this run from scratch silently — rerun with resume=false to start fresh"
            )
        return None
    step, _, path = max(found)
    return path, step
