"""What a reward provides: a score per (prompt, completion text)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from lmlab.config_schema import parse_node
from lmlab.data.tokenizer import TrainedTokenizer
from lmlab.errors import InputError
from lmlab.rl.prompts import Prompt


@dataclass(frozen=True)
class RewardContext:
    """What a reward may need besides its config: the policy's tokenizer, and where runs are found."""

    tokenizer: TrainedTokenizer
    tracking_uri: str | None
    cache_dir: Path


class Reward(ABC):
    Config: ClassVar[type]
    # True: the reward checks each prompt's answer (a fact), so every prompt must have one.
    needs_answers: ClassVar[bool] = False

    def __init__(self, cfg: Any, context: RewardContext) -> None:
        self.cfg = cfg

    def lineage(self) -> dict[str, str]:
        """MLflow tags naming the runs this reward is built from (a reward model's run)."""
        return {}

    @classmethod
    def parse_config(cls, cfg: Any) -> Any:
        return parse_node(cfg, cls.Config, "reward.")

    def check_prompts(self, prompts: list[Prompt]) -> None:
        """Refuse prompts this reward cannot score (before anything is written)."""
        missing = [p.text for p in prompts if not p.answer] if self.needs_answers else []
        if missing:
            raise InputError(
                f"reward={self.cfg.name} checks each prompt's answer; {len(missing)} prompt(s) have none, e.g. "
                f'{missing[0]!r} (a .jsonl prompts file gives it as "answer")'
            )

    @abstractmethod
    def score(self, prompts: list[Prompt], completions: list[str], ended: list[bool]) -> list[float]:
        """One score per completion; `prompts[i]` is the prompt completion i continues, `ended[i]` whether the
        policy ended it with the end token (the text never holds that token)."""
