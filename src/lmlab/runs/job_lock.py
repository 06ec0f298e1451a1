"""One live owner per job directory.

Two identical commands (two terminals, a sweep submitted twice) map to the same deterministic directory; both
would resume the same checkpoints, open MLflow runs and race on the checkpoint files. The first takes an exclusive
`flock` on `<job dir>/.lmlab.lock` and writes who it is there; the second is refused naming that owner. The kernel
drops the lock when its process dies however it dies, so a crashed owner's directory is taken over by the next run.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

from lmlab.errors import InputError
from lmlab.file_lock import LockHeld, file_lock

LOCK_FILE = ".lmlab.lock"


class JobDirInUse(InputError):
    """Another live process owns the job directory."""


@contextmanager
def job_lock(run_dir: Path) -> Iterator[None]:
    """Hold `run_dir` for this process; JobDirInUse if another live process holds it."""
    run_dir.mkdir(parents=True, exist_ok=True)
    with ExitStack() as held:
        try:
            fd = held.enter_context(file_lock(run_dir / LOCK_FILE, wait=False))
        except LockHeld as other:
            raise JobDirInUse(
                f"the job directory {run_dir} is in use by {other.holder or 'an unknown process'}: one job directory "
                "has one live owner. Wait for that run to end (rerunning the command then continues the job), or "
                "stop it first."
            ) from None
        assert fd is not None
        os.ftruncate(fd, 0)
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()} since {stamp}\n".encode(), 0)
        yield
