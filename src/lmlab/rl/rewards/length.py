"""How close the completion's length is to `reward.target` words: 1 at the target, falling linearly to 0 at no
words or twice the target (a rule reward, e.g. to teach a policy to stop, or to test a judge)."""

from __future__ import annotations

from dataclasses import dataclass

from lmlab.config_schema import at_least
from lmlab.rl.prompts import Prompt
from lmlab.rl.rewards.base import Reward


@dataclass
class LengthConfig:
    name: str = "length"
    target: int = 8  # words (whitespace-separated) in the completion

    def validate(self) -> None:
        at_least("reward.target", self.target, 1)


class Length(Reward):
    Config = LengthConfig

    def score(self, prompts: list[Prompt], completions: list[str], ended: list[bool]) -> list[float]:
        target = self.cfg.target
        return [max(0.0, 1 - abs(len(text.split()) - target) / target) for text in completions]


REWARD = Length
