"""The kinds of RL algorithm. A sampling algorithm samples `group` completions per prompt from the policy and scores
them with the reward: a reward algorithm then takes policy-gradient steps on advantages with a KL penalty to the
reference (it says how a group's rewards become advantages); an online preference algorithm lets the reward judge
each group, its best completion against its worst, and learns from those pairs as DPO does. A preference algorithm
(DPO) learns from a file of (prompt, chosen, rejected) pairs. Both preference kinds use the implicit reward, beta x
the policy's log-probability ratio to the reference."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import torch
import torch.nn.functional as F

from lmlab.config_schema import at_least, choice, parse_node
from lmlab.errors import InputError
from lmlab.rl.competition import judge
from lmlab.rl.kl import ESTIMATORS, adapted_kl_coef, kl_per_token
from lmlab.rl.preferences import PreferencePair
from lmlab.rl.prompts import Prompt
from lmlab.rl.rollout import Rollouts, TokenScores, concat, masked_mean, token_scores

if TYPE_CHECKING:
    from lmlab.rl.module import RLModule

# The held-out metrics of each kind (TRL's names).
SAMPLING_METRICS = ("reward", "reward_std", "kl", "entropy", "completions/mean_length", "completions/eos_frac")
PREFERENCE_METRICS = ("loss", "rewards/chosen", "rewards/rejected", "rewards/margins", "rewards/accuracies")
COMPETITION_METRICS = ("win_rate",)


@dataclass
class SamplingConfig:
    name: str = "???"
    group: int = 4  # completions sampled per prompt
    prompts_per_step: int = 8
    max_new_tokens: int = 16
    temperature: float = 1.0

    def validate(self) -> None:
        at_least("rl.group", self.group, 1)
        at_least("rl.prompts_per_step", self.prompts_per_step, 1)
        at_least("rl.max_new_tokens", self.max_new_tokens, 1)
        if not self.temperature > 0:
            raise InputError(f"rl.temperature must be > 0, got {self.temperature}")


@dataclass
class RLAlgorithmConfig(SamplingConfig):
    kl_coef: float = 0.05
    # Adaptive KL (Ziegler et al., 2019): a per-token KL target in nats moves kl_coef toward it, at a rate of
    # completions per step / kl_horizon; unset (null), kl_coef stays fixed.
    kl_target: float | None = None
    kl_horizon: int = 10000
    # k1: subtracted from the sequence reward; k3: a per-token loss term (see lmlab.rl.kl)
    kl_estimator: str = "k3"
    # Optimiser steps on each batch of rollouts; above 1 the loss uses the clipped probability ratio.
    updates_per_batch: int = 1
    clip_eps: float = 0.2

    def validate(self) -> None:
        super().validate()
        at_least("rl.kl_coef", self.kl_coef, 0)
        at_least("rl.updates_per_batch", self.updates_per_batch, 1)
        at_least("rl.clip_eps", self.clip_eps, 0)
        at_least("rl.kl_horizon", self.kl_horizon, 1)
        choice("rl.kl_estimator", self.kl_estimator, ESTIMATORS)
        if self.kl_target is not None and not self.kl_target > 0:
            raise InputError(
                f"rl.kl_target must be > 0 (nats per token) or null for a fixed rl.kl_coef, got {self.kl_target}"
            )
        if self.kl_target is not None and self.kl_coef == 0:
            raise InputError("rl.kl_target adapts rl.kl_coef by a factor each step: it needs rl.kl_coef > 0, got 0")


class RLAlgorithm(ABC):
    """A kind of RL algorithm owns its training step and its held-out evaluation; `RLModule` holds the policy, the
    reference and what they share (sampling, scoring, the optimiser step)."""

    Config: ClassVar[type]
    # The held-out metrics its evaluation reports (without the val/ prefix).
    validation_metrics: ClassVar[tuple[str, ...]] = (*SAMPLING_METRICS, *COMPETITION_METRICS)
    # Whether it plays frozen snapshots of itself (RLModule then keeps an opponent and a pool of snapshots).
    plays_opponents: ClassVar[bool] = False

    def __init__(self, cfg: Any) -> None:
        self.cfg = cfg

    def initial_kl_coef(self) -> float:
        """The KL penalty's starting weight (checkpointed in the module; rl.kl_target moves it)."""
        return 0.0

    @abstractmethod
    def step(self, module: RLModule, batch: list) -> None:
        """One training step on `batch` (prompts or pairs): sample or score, update the policy, step the schedule,
        log."""

    @abstractmethod
    def validate(self, module: RLModule, batch: list, batch_idx: int) -> None:
        """Score one held-out batch into `module.val_metric(name)`."""

    @classmethod
    def parse_config(cls, cfg: Any) -> Any:
        return parse_node(cfg, cls.Config, "rl.")


class SamplingAlgorithm(RLAlgorithm):
    """Learns from completions it samples, scored by the reward (which, as a judge, also compares checkpoints)."""

    Config: ClassVar[type[SamplingConfig]]

    def validate(self, module: RLModule, prompts: list[Prompt], batch_idx: int) -> None:
        """Sample from the policy and, once per batch, the reference (the same draws: each held-out match)."""
        seed = [module.eval_cfg.seed, batch_idx]
        out, rewards, texts = module.rollouts(prompts, module.eval_cfg.samples, seed)
        if batch_idx not in module.reference_scores:  # the same draws from the reference: its side of each match
            module.reference_scores[batch_idx] = module.rollouts(
                prompts, module.eval_cfg.samples, seed, module.reference
            )[1]
        for name, value in module.measured(out, rewards, *module.scored(out)).items():
            module.val_metric(name).update(value)
        module.val_metric("win_rate").update(judge(rewards, module.reference_scores[batch_idx]))
        module.val_scores.append(rewards.flatten())
        samples = module.eval_cfg.samples
        for i, prompt in enumerate(prompts):
            if len(module.val_rows) < module.eval_cfg.table_rows:
                completions = texts[i * samples : (i + 1) * samples]
                module.val_rows.append(
                    {"prompt": prompt.text, "completions": completions, "rewards": rewards[i].tolist()}
                )


class RewardAlgorithm(SamplingAlgorithm):
    Config: ClassVar[type[RLAlgorithmConfig]]

    def initial_kl_coef(self) -> float:
        return float(self.cfg.kl_coef)

    def step(self, module: RLModule, prompts: list[Prompt]) -> None:
        """Sample a group per prompt, shape the rewards with the KL penalty (k1) or add it to the loss (k3), and take
        `rl.updates_per_batch` policy-gradient steps on the group's advantages."""
        cfg = self.cfg
        out, rewards, _ = module.rollouts(prompts, cfg.group, [module.seed, module.global_step])
        mask = out.targets
        old, ref = module.scored(out)
        shaped = rewards
        if cfg.kl_estimator == "k1":  # k1 has no useful gradient: it is a reward penalty (see lmlab.rl.kl)
            penalty = (kl_per_token(old.logprobs, ref.logprobs, "k1") * mask).sum(1).view_as(rewards)
            shaped = rewards - module.kl_coef * penalty
        advantages = self.advantages(shaped)
        for _ in range(cfg.updates_per_batch):
            now = token_scores(module.policy, out)
            loss = self.policy_loss(now.logprobs, old.logprobs, advantages, mask)
            if cfg.kl_estimator == "k3":
                loss = loss + module.kl_coef * masked_mean(kl_per_token(now.logprobs, ref.logprobs, "k3"), mask)
            module.update(loss)
        module.lr_schedulers().step()  # type: ignore[union-attr]
        metrics = module.measured(out, rewards, old, ref)
        metrics["kl_coef"] = torch.tensor(module.kl_coef)
        if cfg.kl_target is not None:
            module.kl_coef = adapted_kl_coef(
                module.kl_coef, float(metrics["kl"]), cfg.kl_target, mask.shape[0], cfg.kl_horizon
            )
        module.log_dict({f"train/{k}": v for k, v in metrics.items()}, prog_bar=True)
        module.log("train/loss", loss.detach())

    @abstractmethod
    def advantages(self, rewards: torch.Tensor) -> torch.Tensor:
        """(prompts, group) rewards -> (prompts, group) advantages, one per completion."""

    def policy_loss(
        self, logprobs: torch.Tensor, old_logprobs: torch.Tensor, advantages: torch.Tensor, mask: torch.Tensor
    ) -> torch.Tensor:
        """The policy-gradient loss per completion token, averaged over tokens: -A ratio, with the ratio to the
        rollout policy clipped (PPO) when the same rollouts are used for more than one update."""
        ratio = torch.exp(logprobs - old_logprobs)
        adv = advantages.reshape(-1, 1)
        loss = -adv * ratio
        if self.cfg.updates_per_batch > 1:
            clipped = -adv * ratio.clamp(1 - self.cfg.clip_eps, 1 + self.cfg.clip_eps)
            loss = torch.maximum(loss, clipped)
        return (loss * mask).sum() / mask.sum().clamp(min=1)


@dataclass
class PreferenceLossConfig:
    beta: float = 0.1  # how far from the reference the implicit reward lets the policy go
    loss: str = "sigmoid"  # sigmoid (DPO) | ipo

    def validate(self) -> None:
        if not self.beta > 0:
            raise InputError(f"rl.beta must be > 0, got {self.beta}")
        choice("rl.loss", self.loss, ("sigmoid", "ipo"))


def preference_loss(chosen: torch.Tensor, rejected: torch.Tensor, cfg: PreferenceLossConfig) -> torch.Tensor:
    """The mean loss over pairs from the implicit rewards (beta x log-ratio to the reference) of each side. DPO
    (Rafailov et al., 2023): -log sigmoid(chosen's - rejected's), ln 2 where the policy is the reference; IPO (Azar
    et al., 2023) regresses the log-ratio difference to 1 / (2 beta) instead, which does not push it without bound."""
    margin = chosen - rejected
    if cfg.loss == "ipo":
        return ((margin / cfg.beta - 1 / (2 * cfg.beta)) ** 2).mean()
    return -F.logsigmoid(margin).mean()


@dataclass
class PreferenceConfig(PreferenceLossConfig):
    name: str = "???"
    pairs_per_step: int = 8

    def validate(self) -> None:
        super().validate()
        at_least("rl.pairs_per_step", self.pairs_per_step, 1)


class PreferenceAlgorithm(RLAlgorithm):
    """Learns from a file of (prompt, chosen, rejected) pairs."""

    Config: ClassVar[type[PreferenceConfig]]
    validation_metrics = PREFERENCE_METRICS

    def loss(self, chosen: torch.Tensor, rejected: torch.Tensor) -> torch.Tensor:
        return preference_loss(chosen, rejected, self.cfg)

    def step(self, module: RLModule, pairs: list[PreferencePair]) -> None:
        chosen, rejected = module.implicit_rewards(pairs)
        loss = self.loss(chosen, rejected)
        module.update(loss)
        module.lr_schedulers().step()  # type: ignore[union-attr]
        module.log_dict({f"train/{k}": v for k, v in module.preference_metrics(chosen, rejected, loss).items()})

    def validate(self, module: RLModule, pairs: list[PreferencePair], batch_idx: int) -> None:
        chosen, rejected = module.implicit_rewards(pairs)
        loss = self.loss(chosen, rejected)
        for name, value in module.preference_metrics(chosen, rejected, loss).items():
            module.val_metric(name).update(value)


@dataclass
class OnlinePreferenceConfig(SamplingConfig, PreferenceLossConfig):
    def validate(self) -> None:
        SamplingConfig.validate(self)
        PreferenceLossConfig.validate(self)


class OnlinePreferenceAlgorithm(SamplingAlgorithm):
    """Learns from pairs it samples and the judge (the reward) decides: online DPO judges a prompt's best
    completion against its worst; self-play judges the policy's completions against an opponent's."""

    Config: ClassVar[type[OnlinePreferenceConfig]]

    def loss(self, chosen: torch.Tensor, rejected: torch.Tensor) -> torch.Tensor:
        return preference_loss(chosen, rejected, self.cfg)

    def step(self, module: RLModule, prompts: list[Prompt]) -> None:
        """Sample a group per prompt, let the judge pick each group's best and worst completion, one DPO step on the
        decided pairs (a group whose rewards all tie gives none; with none, the step's gradient is zero)."""
        group = self.cfg.group
        out, rewards, _ = module.rollouts(prompts, group, [module.seed, module.global_step])
        decided = rewards.max(1).values > rewards.min(1).values
        rows = torch.arange(len(prompts), device=module.device) * group
        chosen_rows, rejected_rows = (rows + rewards.argmax(1))[decided], (rows + rewards.argmin(1))[decided]
        now, ref, pair_metrics = self.learn_from_pairs(module, out, chosen_rows, rejected_rows)
        metrics = {**module.measured(out, rewards, now, ref), **pair_metrics}
        metrics["pairs/decided_frac"] = decided.float().mean()
        module.log_dict({f"train/{k}": v for k, v in metrics.items()}, prog_bar=True)

    def learn_from_pairs(
        self, module: RLModule, out: Rollouts, chosen_rows: torch.Tensor, rejected_rows: torch.Tensor
    ) -> tuple[TokenScores, TokenScores, dict]:
        """One DPO step on the judged pairs (rows of `out`; with none decided the gradient is zero). Returns the
        policy's and the reference's scores of `out` and the pairs' metrics (none without a pair)."""
        with torch.no_grad():
            ref = token_scores(module.reference, out)
        now = token_scores(module.policy, out)
        implicit = self.cfg.beta * (now.logprobs.sum(1) - ref.logprobs.sum(1))
        chosen, rejected = implicit[chosen_rows], implicit[rejected_rows]
        decided = len(chosen_rows) > 0
        loss = self.loss(chosen, rejected) if decided else implicit.sum() * 0
        module.update(loss)
        module.lr_schedulers().step()  # type: ignore[union-attr]
        return now, ref, module.preference_metrics(chosen, rejected, loss) if decided else {}


class SelfPlayAlgorithm(OnlinePreferenceAlgorithm):
    """Plays a pool of frozen earlier checkpoints of itself (its config has `pool_every` and `pool_size`): an
    opponent drawn each step from the step's seed, the policy's completions judged against the opponent's."""

    plays_opponents = True

    def step(self, module: RLModule, prompts: list[Prompt]) -> None:
        """Draw an opponent from the pool, sample `group` completions of each prompt from the policy and from it,
        let the judge decide each match, one DPO step on the decided ones (winner over loser); then the policy
        joins the pool every `rl.pool_every` steps."""
        cfg = self.cfg
        opponent = module.draw_opponent()
        mine, my_rewards, _ = module.rollouts(prompts, cfg.group, [module.seed, module.global_step])
        theirs, their_rewards, _ = module.rollouts(prompts, cfg.group, [module.seed, module.global_step, 1], opponent)
        outcome = judge(my_rewards, their_rewards).flatten()
        decided, won = outcome != 0.5, outcome == 1.0
        n = len(outcome)
        ours, opponents = torch.arange(n, device=module.device), torch.arange(n, 2 * n, device=module.device)
        chosen_rows = torch.where(won, ours, opponents)[decided]
        rejected_rows = torch.where(won, opponents, ours)[decided]
        now, ref, pair_metrics = self.learn_from_pairs(
            module, concat(mine, theirs, module.pad_id), chosen_rows, rejected_rows
        )
        metrics = {**module.measured(mine, my_rewards, _rows(now, 0, n), _rows(ref, 0, n)), **pair_metrics}
        metrics.update(
            {"win_rate_vs_opponent": outcome.mean(), "opponent_step": torch.tensor(float(module.opponent_step or 0))}
        )
        metrics["pairs/decided_frac"] = decided.float().mean()
        module.log_dict({f"train/{k}": v for k, v in metrics.items()}, prog_bar=True)
        if module.global_step % cfg.pool_every == 0:
            module.pool[module.global_step] = {
                k: v.detach().clone().cpu() for k, v in module.policy.state_dict().items()
            }
            for old in sorted(module.pool)[: max(0, len(module.pool) - cfg.pool_size)]:
                del module.pool[old]


def _rows(scores: TokenScores, start: int, stop: int) -> TokenScores:
    return TokenScores(scores.logprobs[start:stop], scores.entropy[start:stop])
