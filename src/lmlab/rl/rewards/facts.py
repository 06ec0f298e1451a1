"""1 when the completion begins by stating the prompt's answer (the person's true employer for the synthetic
world's "<name> works for" prompts), compared case- and space-insensitively, else 0."""

from __future__ import annotations

from dataclasses import dataclass

from lmlab.rl.prompts import Prompt
from lmlab.rl.rewards.base import Reward


@dataclass
class FactsConfig:
    name: str = "facts"


def _normal(text: str) -> str:
    return "".join(text.lower().split())


class Facts(Reward):
    Config = FactsConfig
    needs_answers = True

    def score(self, prompts: list[Prompt], completions: list[str], ended: list[bool]) -> list[float]:
        return [float(_normal(c).startswith(_normal(p.answer))) for p, c in zip(prompts, completions, strict=True)]


REWARD = Facts
