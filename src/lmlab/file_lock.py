"""One exclusive file lock, used for every lock lmlab takes: a job directory's live owner (`runs.job_lock`), building a
cache entry (`data.cache`) and first use of an SQLite tracking store (`tracking.mlflow_run`).

It is `fcntl.flock` on an open descriptor: the kernel drops it when the process dies, however it dies. Written here
rather than taken from `filelock` for two measured reasons: `filelock` truncates the lock file on every acquire
attempt (a refused job could no longer read who holds its directory, which the job lock reports), and it raises on a
filesystem without flock (Lustre mounted without it), where a cache build must go on unlocked."""

from __future__ import annotations

import fcntl
import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

log = logging.getLogger(__name__)


class LockHeld(OSError):
    """Another live process holds the lock; `holder` is what it wrote into the lock file."""

    def __init__(self, path: Path, holder: str) -> None:
        super().__init__(f"{path} is locked by {holder or 'an unknown process'}")
        self.holder = holder


@contextmanager
def file_lock(
    path: Path, *, wait: bool = True, required: bool = True, unlocked: str = "this block runs without it"
) -> Iterator[int | None]:
    """Hold an exclusive lock on `path` (created if missing) for the block; yields its open descriptor, which the
    holder may write who it is into. `wait=False` raises LockHeld at once when another process holds it. Where the
    filesystem has no file locks, `required=False` runs the block unlocked (yielding None, and warning what that
    means: `unlocked`) instead of raising."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            raise LockHeld(path, os.pread(fd, 512, 0).decode(errors="replace").strip()) from None
        except OSError as err:
            if required:
                raise
            log.warning("No file lock on %s (%s): %s", path, err, unlocked)
            yield None
            return
        try:
            yield fd
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
