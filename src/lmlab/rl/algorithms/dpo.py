"""DPO from a file of (prompt, chosen, rejected) pairs (`preferences=<pairs.jsonl>`); `rl.loss=ipo` for IPO. The
loss is `lmlab.rl.algorithms.base.preference_loss`."""

from __future__ import annotations

from dataclasses import dataclass

from lmlab.rl.algorithms.base import PreferenceAlgorithm, PreferenceConfig


@dataclass
class DPOConfig(PreferenceConfig):
    name: str = "dpo"


class DPO(PreferenceAlgorithm):
    Config = DPOConfig


ALGORITHM = DPO
