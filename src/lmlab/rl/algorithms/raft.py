"""RAFT (Dong et al., 2023), reward-ranked fine-tuning, also known as best-of-n rejection sampling or expert
iteration: sample a group of completions per prompt, keep the one the reward ranks best, and take a supervised step
on it (the negative log-likelihood of its tokens under the policy). A kind of its own: no policy gradient, no
advantage, no KL term; the reference is only measured against (`train/kl`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from lmlab.errors import InputError
from lmlab.rl.algorithms.base import SamplingAlgorithm, SamplingConfig
from lmlab.rl.prompts import Prompt
from lmlab.rl.rollout import token_scores

if TYPE_CHECKING:
    from lmlab.rl.module import RLModule


@dataclass
class RAFTConfig(SamplingConfig):
    name: str = "raft"
    # A group's best completion is learned from only when its reward is above this (and above the group's worst).
    min_reward: float = 0.0

    def validate(self) -> None:
        super().validate()
        if self.group < 2:
            raise InputError(f"rl=raft keeps the best of a prompt's group: rl.group must be >= 2, got {self.group}")


class RAFT(SamplingAlgorithm):
    Config = RAFTConfig

    def step(self, module: RLModule, prompts: list[Prompt]) -> None:
        group = self.cfg.group
        out, rewards, _ = module.rollouts(prompts, group, [module.seed, module.global_step])
        best, worst = rewards.max(1).values, rewards.min(1).values
        kept = (best > worst) & (best > self.cfg.min_reward)
        rows = (torch.arange(len(prompts), device=module.device) * group + rewards.argmax(1))[kept]
        now = token_scores(module.policy, out)
        mask = out.targets[rows]
        # With no group kept the step's gradient is zero (the schedule still steps: one step per batch).
        nll = -(now.logprobs[rows] * mask).sum() / mask.sum().clamp(min=1)
        module.update(nll)
        module.lr_schedulers().step()  # type: ignore[union-attr]
        with torch.no_grad():
            ref = token_scores(module.reference, out)
        metrics = {**module.measured(out, rewards, now, ref), "kept_frac": kept.float().mean(), "loss": nll.detach()}
        module.log_dict({f"train/{k}": v for k, v in metrics.items()}, prog_bar=True)


ALGORITHM = RAFT
