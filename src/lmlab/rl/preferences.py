"""Preference pairs for DPO: a .jsonl file, one {"prompt": ..., "chosen": ..., "rejected": ...} per line (every
field a non-empty string; chosen and rejected continue the prompt)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from lmlab.data.text_files import checked_lines
from lmlab.errors import InputError

FIELDS = ("prompt", "chosen", "rejected")


@dataclass(frozen=True)
class PreferencePair:
    prompt: str
    chosen: str
    rejected: str


def read_pairs(path: Path) -> list[PreferencePair]:
    if path.suffix.lower() not in (".jsonl", ".json"):
        raise InputError(f"preferences={path}: expected a .jsonl (or .json) file with {list(FIELDS)} on each line")
    pairs = []
    for number, line in checked_lines(path, "preferences"):
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            raise InputError(f"preferences {path}:{number}: not JSON ({err})") from err
        bad = [f for f in FIELDS if not isinstance(row, dict) or not isinstance(row.get(f), str) or not row[f].strip()]
        if bad:
            raise InputError(f"preferences {path}:{number}: {bad} missing or empty; each line needs {list(FIELDS)}")
        if row["chosen"] == row["rejected"]:
            raise InputError(f"preferences {path}:{number}: chosen and rejected are the same text")
        pairs.append(PreferencePair(row["prompt"], row["chosen"], row["rejected"]))
    if len(pairs) < 2:
        raise InputError(f"preferences {path}: {len(pairs)} pair(s); training and held-out pairs need >= 2")
    return pairs
