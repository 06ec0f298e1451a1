"""Files that are either the old or the new version, never half written: a crash mid-write leaves a hidden
`.name.tmp` beside them."""

from __future__ import annotations

import os
from pathlib import Path

from lmlab.errors import InputError


def write_text_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def check_writable_dir(path: Path, what: str) -> None:
    """Refuse (InputError) before a run is recorded a directory it could not write into at its first save."""
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / f".write-probe-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as err:
        raise InputError(
            f"{what} {path} is not a writable directory ({err.strerror or err}); fix its permissions or move it"
        ) from None
