"""1 when the policy ended the completion with the end token within `rl.max_new_tokens`, else 0: a rule reward for
finishing what it writes (alone, or as the judge of a length habit)."""

from __future__ import annotations

from dataclasses import dataclass

from lmlab.rl.prompts import Prompt
from lmlab.rl.rewards.base import Reward


@dataclass
class EosConfig:
    name: str = "eos"


class Eos(Reward):
    Config = EosConfig

    def score(self, prompts: list[Prompt], completions: list[str], ended: list[bool]) -> list[float]:
        return [float(e) for e in ended]


REWARD = Eos
