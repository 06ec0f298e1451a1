"""One live owner per job directory.

Two identical commands (two terminals, a sweep submitted twice) map to the same deterministic directory; both
would resume the same checkpoints, open MLflow runs and race on the checkpoint files. The first takes an exclusive
`flock` on `<job dir>/.lmlab.lock` and writes who it is there; the second is refused naming that owner. The kernel
drops the lock when its process dies however it dies, so a crashed owner's directory is taken over by the next run.
"""

from __future__ import annotations

import fcntl
import os
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from lmlab.errors import InputError

LOCK_FILE = ".lmlab.lock"


class JobDirInUse(InputError):
    """Another live process owns the job directory."""


@contextmanager
def job_lock(run_dir: Path) -> Iterator[None]:
    """Hold `run_dir` for this process; JobDirInUse if another live process holds it."""
    run_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(run_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            owner = os.pread(fd, 512, 0).decode(errors="replace").strip() or "an unknown process"
            raise JobDirInUse(
                f"the job directory {run_dir} is in use by {owner}: one job directory has one live owner. Wait "
                "for that run to end (rerunning the command then continues the job), or stop it first."
            ) from None
        os.ftruncate(fd, 0)
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()} since {stamp}\n".encode(), 0)
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
