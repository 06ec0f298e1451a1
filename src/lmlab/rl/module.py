"""The LightningModule of an RL run: manual optimisation, because one step of a reward algorithm samples rollouts
from the policy, scores them, and then takes `rl.updates_per_batch` optimiser steps on them; a preference algorithm
(DPO) takes one step per batch of pairs.

Rollout randomness is a function of (seed, step) and held-out sampling of `eval.seed`, so a resumed run samples
exactly what an uninterrupted one would, and every evaluation sees the same held-out draws."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any, cast

import numpy as np
import pytorch_lightning as pl
import torch
from pytorch_lightning.utilities.types import OptimizerLRSchedulerConfig
from torchmetrics import MeanMetric

from lmlab.data.tokenizer import PAD, SEP, TrainedTokenizer
from lmlab.models import Backbone
from lmlab.rl.algorithms import PreferenceAlgorithm, RewardAlgorithm, RLAlgorithm
from lmlab.rl.kl import kl_per_token
from lmlab.rl.preferences import PreferencePair
from lmlab.rl.prompts import Prompt
from lmlab.rl.rewards import Reward
from lmlab.rl.rollout import Rollouts, masked_mean, pack, sample, token_scores
from lmlab.runs.config import OptimConfig
from lmlab.runs.optim import lightning_optimizers

METRICS = ("reward", "reward_std", "kl", "entropy", "completions/mean_length", "completions/eos_frac")
PREFERENCE_METRICS = ("loss", "rewards/chosen", "rewards/rejected", "rewards/margins", "rewards/accuracies")


class RLModule(pl.LightningModule):
    def __init__(
        self,
        policy: Backbone,
        algorithm: RLAlgorithm,
        reward: Reward | None,
        tokenizer: TrainedTokenizer,
        optim_cfg: OptimConfig,
        max_steps: int,
        clip: float,
        seed: int,
        eval_cfg: Any,
        completions_dir: Path | None,
    ) -> None:
        super().__init__()
        self.automatic_optimization = False
        self.policy = policy
        self.reference = copy.deepcopy(policy).requires_grad_(False).eval()
        self.algorithm, self.reward, self.tokenizer = algorithm, reward, tokenizer
        self.optim_cfg, self.max_steps, self.clip, self.seed = optim_cfg, max_steps, clip, seed
        self.eval_cfg, self.completions_dir = eval_cfg, completions_dir
        self.end_id, self.pad_id = tokenizer.token_id(SEP), tokenizer.token_id(PAD)
        self.metric_names = PREFERENCE_METRICS if isinstance(algorithm, PreferenceAlgorithm) else METRICS
        self.val_metrics = torch.nn.ModuleDict({name.replace("/", "__"): MeanMetric() for name in self.metric_names})
        self.val_rows: list[dict] = []

    def train(self, mode: bool = True) -> RLModule:
        super().train(mode)
        self.reference.eval()  # frozen: never in training mode (dropout), never stepped
        return self

    def transfer_batch_to_device(self, batch: Any, device: torch.device, dataloader_idx: int) -> Any:
        return batch  # prompts are text; rollouts are made on the device

    def rollouts(self, prompts: list[Prompt], group: int, seed: list[int]) -> tuple[Rollouts, torch.Tensor, list[str]]:
        """`group` completions per prompt, their texts and their (prompts, group) rewards."""
        generator = torch.Generator(device=self.device).manual_seed(_seed(seed))
        ids = [self.tokenizer.tokenizer.encode(p.text, add_special_tokens=False).ids for p in prompts]
        cfg = self.algorithm.cfg
        out = sample(self.policy, ids, group, cfg.max_new_tokens, cfg.temperature, self.end_id, self.pad_id, generator)
        texts = self.tokenizer.tokenizer.decode_batch(out.completions())
        assert self.reward is not None
        scored = self.reward.score([p for p in prompts for _ in range(group)], texts)
        return out, torch.tensor(scored, device=self.device).view(len(prompts), group), texts

    def measured(self, out: Rollouts, rewards: torch.Tensor) -> dict[str, torch.Tensor]:
        """The TRL-named metrics of a batch of rollouts under the current policy."""
        with torch.no_grad():
            now, ref = token_scores(self.policy, out), token_scores(self.reference, out)
        kl = kl_per_token(now.logprobs, ref.logprobs, self.algorithm.cfg.kl_estimator)
        return {
            "reward": rewards.mean(),
            "reward_std": rewards.std() if rewards.numel() > 1 else rewards.new_zeros(()),
            "kl": masked_mean(kl, out.targets),
            "entropy": masked_mean(now.entropy, out.targets),
            "completions/mean_length": out.lengths().float().mean(),
            "completions/eos_frac": out.ended.float().mean(),
        }

    def implicit_rewards(self, pairs: list[PreferencePair]) -> tuple[torch.Tensor, torch.Tensor]:
        """beta x (log policy - log reference) of each pair's chosen and rejected completion (whole sequences)."""
        encode = self.tokenizer.tokenizer.encode_batch
        prompts = encode([p.prompt for p in pairs], add_special_tokens=False)
        rows = []
        for side in ("chosen", "rejected"):
            completions = encode([getattr(p, side) for p in pairs], add_special_tokens=False)
            rows += [(p.ids, [*c.ids, self.end_id], True) for p, c in zip(prompts, completions, strict=True)]
        out = pack(rows, 1, self.pad_id, self.device)
        with torch.no_grad():
            ref = token_scores(self.reference, out).logprobs.sum(1)
        ratio = token_scores(self.policy, out).logprobs.sum(1) - ref
        rewards = self.algorithm.cfg.beta * ratio
        return rewards[: len(pairs)], rewards[len(pairs) :]

    def preference_metrics(self, chosen: torch.Tensor, rejected: torch.Tensor, loss: torch.Tensor) -> dict:
        return {
            "loss": loss.detach(),
            "rewards/chosen": chosen.detach().mean(),
            "rewards/rejected": rejected.detach().mean(),
            "rewards/margins": (chosen - rejected).detach().mean(),
            "rewards/accuracies": (chosen > rejected).float().mean(),
        }

    def training_step(self, batch: list, batch_idx: int) -> None:
        self.policy.eval()  # sampling and scoring see the policy the loss differentiates (no dropout noise)
        if isinstance(self.algorithm, PreferenceAlgorithm):
            self.preference_step(batch)
        else:
            self.reward_step(batch)

    def preference_step(self, pairs: list[PreferencePair]) -> None:
        assert isinstance(self.algorithm, PreferenceAlgorithm)
        optimizer, schedule = self.optimizers(), self.lr_schedulers()
        optimizer.zero_grad()  # type: ignore[union-attr]
        chosen, rejected = self.implicit_rewards(pairs)
        loss = self.algorithm.loss(chosen, rejected)
        self.manual_backward(loss)
        if self.clip > 0:
            self.clip_gradients(optimizer, gradient_clip_val=self.clip, gradient_clip_algorithm="norm")  # type: ignore[arg-type]
        optimizer.step()  # type: ignore[union-attr]
        schedule.step()  # type: ignore[union-attr]
        self.log_dict({f"train/{k}": v for k, v in self.preference_metrics(chosen, rejected, loss).items()})

    def reward_step(self, prompts: list[Prompt]) -> None:
        assert isinstance(self.algorithm, RewardAlgorithm)
        cfg = self.algorithm.cfg
        optimizer, schedule = self.optimizers(), self.lr_schedulers()
        out, rewards, _ = self.rollouts(prompts, cfg.group, [self.seed, self.global_step])
        mask = out.targets
        with torch.no_grad():
            old, ref = token_scores(self.policy, out), token_scores(self.reference, out)
        shaped = rewards
        if cfg.kl_estimator == "k1":  # k1 has no useful gradient: it is a reward penalty (see lmlab.rl.kl)
            penalty = (kl_per_token(old.logprobs, ref.logprobs, "k1") * mask).sum(1).view_as(rewards)
            shaped = rewards - cfg.kl_coef * penalty
        advantages = self.algorithm.advantages(shaped)
        for _ in range(cfg.updates_per_batch):
            optimizer.zero_grad()  # type: ignore[union-attr]
            now = token_scores(self.policy, out)
            loss = self.algorithm.policy_loss(now.logprobs, old.logprobs, advantages, mask)
            if cfg.kl_estimator == "k3":
                loss = loss + cfg.kl_coef * masked_mean(kl_per_token(now.logprobs, ref.logprobs, "k3"), mask)
            self.manual_backward(loss)
            if self.clip > 0:
                self.clip_gradients(optimizer, gradient_clip_val=self.clip, gradient_clip_algorithm="norm")  # type: ignore[arg-type]
            optimizer.step()  # type: ignore[union-attr]
        schedule.step()  # type: ignore[union-attr]
        metrics = self.measured(out, rewards)
        metrics["kl"] = masked_mean(kl_per_token(old.logprobs, ref.logprobs, cfg.kl_estimator), mask)
        self.log_dict({f"train/{k}": v for k, v in metrics.items()}, prog_bar=True)
        self.log("train/loss", loss.detach())

    def validation_step(self, batch: list, batch_idx: int) -> None:
        if isinstance(self.algorithm, PreferenceAlgorithm):
            chosen, rejected = self.implicit_rewards(batch)
            loss = self.algorithm.loss(chosen, rejected)
            for name, value in self.preference_metrics(chosen, rejected, loss).items():
                self._val_metric(name).update(value)
            return
        prompts: list[Prompt] = batch
        out, rewards, texts = self.rollouts(prompts, self.eval_cfg.samples, [self.eval_cfg.seed, batch_idx])
        for name, value in self.measured(out, rewards).items():
            self._val_metric(name).update(value)
        samples = self.eval_cfg.samples
        for i, prompt in enumerate(prompts):
            if len(self.val_rows) < self.eval_cfg.table_rows:
                completions = texts[i * samples : (i + 1) * samples]
                self.val_rows.append(
                    {"prompt": prompt.text, "completions": completions, "rewards": rewards[i].tolist()}
                )

    def on_validation_epoch_end(self) -> None:
        self.log_dict({f"val/{name}": self._val_metric(name).compute() for name in self.metric_names}, prog_bar=True)
        for name in self.metric_names:
            self._val_metric(name).reset()
        if self.completions_dir is not None and self.val_rows and not self.trainer.sanity_checking:
            self.completions_dir.mkdir(parents=True, exist_ok=True)
            path = self.completions_dir / f"step{self.global_step}.jsonl"
            path.write_text("".join(json.dumps(row) + "\n" for row in self.val_rows))
        self.val_rows = []

    def _val_metric(self, name: str) -> MeanMetric:
        return cast(MeanMetric, self.val_metrics[name.replace("/", "__")])

    def configure_optimizers(self) -> OptimizerLRSchedulerConfig:
        return lightning_optimizers(self.policy, self.optim_cfg, self.max_steps)


def _seed(parts: list[int]) -> int:
    """One 63-bit seed from several integers (numpy's SeedSequence mixing)."""
    return int(np.random.SeedSequence(parts).generate_state(1, dtype=np.uint64)[0] >> 1)
