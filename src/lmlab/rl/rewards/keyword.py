"""1 when the completion contains any of `reward.words` as a whole word (case-insensitive), else 0."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from lmlab.errors import InputError
from lmlab.rl.prompts import Prompt
from lmlab.rl.rewards.base import Reward, RewardContext


@dataclass
class KeywordConfig:
    name: str = "keyword"
    words: list[str] = field(default_factory=list)

    def validate(self) -> None:
        if not self.words or not all(w.strip() for w in self.words):
            raise InputError(f"reward=keyword needs reward.words, a list of non-empty words; got {self.words}")


class Keyword(Reward):
    Config = KeywordConfig

    def __init__(self, cfg: KeywordConfig, context: RewardContext) -> None:
        super().__init__(cfg, context)
        self.pattern = re.compile(r"\b(" + "|".join(re.escape(w.strip()) for w in cfg.words) + r")\b", re.IGNORECASE)

    def score(self, prompts: list[Prompt], completions: list[str], ended: list[bool]) -> list[float]:
        return [float(bool(self.pattern.search(text))) for text in completions]


REWARD = Keyword
