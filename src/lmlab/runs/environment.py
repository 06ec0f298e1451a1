"""The software a run ran on, recorded with it: the lock file's hash, the versions that matter most as tags, and
every installed package as an artifact (environment.txt)."""

from __future__ import annotations

import hashlib
import platform
from importlib import metadata
from pathlib import Path

import pytorch_lightning
import torch

# The checkout's lock file (an editable install runs from src/lmlab in the checkout).
LOCK_FILE = Path(__file__).resolve().parents[3] / "requirements" / "lock.txt"


def environment_tags(lock_file: Path = LOCK_FILE) -> dict[str, str]:
    lock = hashlib.sha256(lock_file.read_bytes()).hexdigest() if lock_file.is_file() else "none"
    return {
        "lmlab.env.lock_sha256": lock,
        "lmlab.env.python": platform.python_version(),
        "lmlab.env.torch": torch.__version__,
        "lmlab.env.lightning": pytorch_lightning.__version__,
        "lmlab.env.cuda": torch.version.cuda or "none",
    }


def frozen_packages() -> str:
    """Every installed distribution as `name==version`, one a line, sorted (what `pip freeze` lists)."""
    found = {(d.metadata["Name"] or "").lower(): d.version for d in metadata.distributions()}
    return "".join(f"{name}=={version}\n" for name, version in sorted(found.items()) if name)
