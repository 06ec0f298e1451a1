"""Content fingerprints, atomic writes and build locks for everything cached on disk."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from lmlab.file_lock import file_lock

log = logging.getLogger(__name__)


def fingerprint(*parts: Any) -> str:
    """A short stable hash of JSON-serialisable parts."""
    payload = json.dumps(parts, sort_keys=True, default=str).encode()
    return hashlib.sha256(payload).hexdigest()[:16]


def file_digest(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


class PublishedMeanwhile(FileExistsError):
    """Another process published the directory first (see `atomic_directory(exclusive=True)`)."""


@contextmanager
def atomic_directory(final: Path, *, exclusive: bool = False) -> Iterator[Path]:
    """Yield a temporary directory beside `final`; on success it is renamed to `final` in one step.

    A crash leaves only the temporary directory, never a half-written `final`. If another process
    published `final` first, its copy is kept and ours is discarded: silently for a cache entry (both copies hold
    the same), with `PublishedMeanwhile` when `exclusive` (an output the caller reports as written by it).
    """
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=final.parent))
    try:
        yield tmp
        try:
            os.replace(tmp, final)
        except OSError as err:
            if not final.is_dir():
                raise
            if exclusive:
                raise PublishedMeanwhile(
                    f"{final} was written by another process meanwhile; ours was discarded"
                ) from err
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


@contextmanager
def building(final: Path) -> Iterator[None]:
    """Hold the lock on building the cache entry `final` for the block.

    A process that comes to build the same entry (another rank of the job, another job of a sweep sharing the cache)
    waits here until this one is done, then finds it built instead of building it again alongside. The holder first
    removes what a killed build of the entry left: `atomic_directory`'s temporary directories beside `final` and
    inside it, which only a holder writes. Where the filesystem has no file locks (Lustre mounted without flock),
    nobody waits and nothing is removed: concurrent builders each write, and `atomic_directory` keeps the first.
    """
    final.parent.mkdir(parents=True, exist_ok=True)
    lock = final.parent / f".{final.name}.lock"
    with file_lock(lock, required=False, unlocked="a concurrent build of it is not waited for") as held:
        if held is not None:
            _remove_unfinished(final)
        yield


def _remove_unfinished(final: Path) -> None:
    inside = final.glob(".*") if final.is_dir() else ()
    for path in (*final.parent.glob(f".{final.name}.*"), *inside):
        if path.is_dir():
            log.info("Removing %s, left by a build that did not finish", path)
            shutil.rmtree(path, ignore_errors=True)
