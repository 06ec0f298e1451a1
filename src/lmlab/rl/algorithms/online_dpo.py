"""Online DPO (Guo et al., 2024, "Direct language model alignment from online AI feedback"): each step samples
`rl.group` completions of every prompt from the current policy, the judge (the reward as a pairwise judge: the
higher-scored completion wins) picks the best and the worst, and the DPO loss (`rl.loss`, `rl.beta`) learns from
those pairs. A prompt whose completions all score the same gives no pair."""

from __future__ import annotations

from dataclasses import dataclass

from lmlab.errors import InputError
from lmlab.rl.algorithms.base import OnlinePreferenceAlgorithm, OnlinePreferenceConfig


@dataclass
class OnlineDPOConfig(OnlinePreferenceConfig):
    name: str = "online_dpo"
    group: int = 2

    def validate(self) -> None:
        super().validate()
        if self.group < 2:
            raise InputError(
                f"rl=online_dpo lets the judge compare completions of the same prompt: rl.group must be >= 2, "
                f"got {self.group}"
            )


class OnlineDPO(OnlinePreferenceAlgorithm):
    Config = OnlineDPOConfig


ALGORITHM = OnlineDPO
