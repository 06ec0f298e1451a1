"""Prompts to roll out from: the synthetic world's people ("<name> works for", with the true employer as the
answer a fact reward checks), or a local file (.txt: one prompt per line; .jsonl: {"prompt": ..., "answer": ...}).
Prompts are split once by `prompts.split_seed` into training and held-out prompts."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import numpy as np

from lmlab.config_schema import choice, require_file
from lmlab.data.config import WorldConfig
from lmlab.data.synthetic import World
from lmlab.data.text_files import checked_lines
from lmlab.errors import InputError

SOURCES = ("synthetic", "file")
JSON_LINES = (".jsonl", ".json")  # suffixes (any case) of JSON-lines files
T = TypeVar("T")


@dataclass
class PromptConfig:
    source: str = "synthetic"
    # synthetic: the pretraining corpus's world (its people's facts are what the policy may state)
    world: WorldConfig = field(default_factory=WorldConfig)
    file: str = ""
    eval_fraction: float = 0.2
    split_seed: int = 0

    def validate(self) -> None:
        choice("prompts.source", self.source, SOURCES)
        if not 0 < self.eval_fraction < 1:
            raise InputError(f"prompts.eval_fraction must be in (0, 1), got {self.eval_fraction}")
        if self.source == "file":
            if not self.file:
                raise InputError("prompts.source=file needs prompts.file (a .txt, one prompt per line, or a .jsonl)")
            require_file(self.file, "prompts.file")
        elif self.file:
            raise InputError("prompts.file is for prompts.source=file; it would be ignored with synthetic")


@dataclass(frozen=True)
class Prompt:
    text: str
    answer: str = ""  # what a fact reward checks the completion states ("" when the source has none)


def read_prompts(cfg: PromptConfig) -> list[Prompt]:
    if cfg.source == "synthetic":
        w = cfg.world
        world = World(w.seed, n_people=w.people, n_places=w.places, n_orgs=w.organisations)
        return [Prompt(f"{p.name} works for", p.employer.name) for p in world.people]
    path = Path(cfg.file).expanduser()
    suffix = path.suffix.lower()
    if suffix not in (".txt", *JSON_LINES):
        raise InputError(
            f"prompts.file={path}: {path.suffix or 'no suffix'} is not a prompts format; give a .txt (one prompt per "
            'line) or a .jsonl/.json file ({"prompt": ..., "answer": ...} on each line)'
        )
    lines = checked_lines(path, "prompts.file")
    if suffix == ".txt":
        prompts = [Prompt(line.strip()) for _, line in lines]
    else:
        prompts = []
        for number, line in lines:
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                raise InputError(f"prompts.file {path}:{number}: not JSON ({err})") from err
            if not isinstance(row, dict) or not isinstance(row.get("prompt"), str) or not row["prompt"].strip():
                raise InputError(f'prompts.file {path}:{number}: each line needs a non-empty "prompt" string')
            if not isinstance(row.get("answer", ""), str):
                raise InputError(f'prompts.file {path}:{number}: "answer" must be a string when given')
            prompts.append(Prompt(row["prompt"], row.get("answer", "")))
    if len(prompts) < 2:
        raise InputError(f"prompts.file {path}: {len(prompts)} prompt(s); training and held-out prompts need >= 2")
    return prompts


def split_held_out(items: list[T], eval_fraction: float, seed: int) -> tuple[list[T], list[T]]:
    """Training and held-out items (prompts, preference pairs), disjoint, split by `seed`."""
    order = np.random.default_rng(seed).permutation(len(items))
    n_eval = max(1, int(round(eval_fraction * len(items))))
    return [items[i] for i in order[n_eval:]], [items[i] for i in order[:n_eval]]
