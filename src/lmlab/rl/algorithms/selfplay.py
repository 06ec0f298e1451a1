"""Self-play against a pool of frozen earlier checkpoints (in the spirit of SPIN, Chen et al., 2024, with a judge
instead of reference answers): each step draws an opponent from the pool (the reference and the newest
`rl.pool_size` snapshots of the policy, one every `rl.pool_every` steps), samples `rl.group` completions of each
prompt from both, and the judge (the reward: the higher-scored completion wins) decides each match; the DPO loss
(`rl.beta`, `rl.loss`) learns from the winner over the loser. Tied matches give no pair."""

from __future__ import annotations

from dataclasses import dataclass

from lmlab.config_schema import at_least
from lmlab.rl.algorithms.base import OnlinePreferenceConfig, SelfPlayAlgorithm


@dataclass
class SelfPlayConfig(OnlinePreferenceConfig):
    name: str = "selfplay"
    group: int = 2  # completions per prompt from each side; the policy's j-th meets the opponent's j-th
    pool_every: int = 50  # steps between the policy's snapshots joining the pool of opponents
    pool_size: int = 4  # the newest snapshots kept; the reference (step 0) is always in the pool

    def validate(self) -> None:
        super().validate()
        at_least("rl.pool_every", self.pool_every, 1)
        at_least("rl.pool_size", self.pool_size, 0)


class SelfPlay(SelfPlayAlgorithm):
    Config = SelfPlayConfig


ALGORITHM = SelfPlay
