"""The LightningModule of an RL run: manual optimisation, because one step of a reward algorithm samples rollouts
from the policy, scores them, and then takes `rl.updates_per_batch` optimiser steps on them; an online preference
algorithm samples, lets the judge pick pairs and takes one DPO step on them; a preference algorithm (DPO) takes one
step per batch of pairs from its file.

Rollout randomness is a function of (seed, step) and held-out sampling of `eval.seed`, so a resumed run samples
exactly what an uninterrupted one would, and every evaluation sees the same held-out draws: a sampling algorithm's
evaluation is also a match against the reference (`val/win_rate`) and against every earlier evaluation (`val/elo`,
`elo.json`; see `lmlab.rl.competition`)."""

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

from lmlab.callbacks.nonfinite import check_finite
from lmlab.data.tokenizer import CLS, PAD, SEP, TrainedTokenizer
from lmlab.generation import model_input
from lmlab.models import Backbone
from lmlab.rl.algorithms import (
    RLAlgorithm,
)
from lmlab.rl.competition import elo_ratings, judge
from lmlab.rl.kl import kl_per_token
from lmlab.rl.preferences import PreferencePair
from lmlab.rl.prompts import Prompt
from lmlab.rl.rewards import Reward
from lmlab.rl.rollout import Rollouts, TokenScores, masked_mean, pack, sample, token_scores
from lmlab.runs.config import OptimConfig
from lmlab.runs.manual_step import manual_step
from lmlab.runs.optim import lightning_optimizers

KL_METRIC = "k3"  # the reported KL (an unbiased, never-negative per-token estimate), whatever the penalty uses
ELO_FILE = "elo.json"


class RLModule(pl.LightningModule):
    def __init__(
        self,
        policy: Backbone,
        algorithm: RLAlgorithm,
        *,
        reward: Reward | None,
        tokenizer: TrainedTokenizer,
        optim_cfg: OptimConfig,
        max_steps: int,
        clip: float,
        seed: int,
        eval_cfg: Any,
        completions_dir: Path | None,
        mode_token: str | None,
    ) -> None:
        """`mode_token`: what the policy reads before a prompt (its pretraining objective's; UL2's [S2S])."""
        super().__init__()
        self.automatic_optimization = False
        self.policy = policy
        self.reference = copy.deepcopy(policy).requires_grad_(False).eval()
        # Self-play: the opponent's weights are loaded from the pool of snapshots (step -> state dict, checkpointed).
        self.opponent = copy.deepcopy(self.reference) if algorithm.plays_opponents else None
        self.pool: dict[int, dict[str, torch.Tensor]] = {}
        self.opponent_step: int | None = None
        self.algorithm, self.reward, self.tokenizer = algorithm, reward, tokenizer
        self.optim_cfg, self.max_steps, self.clip, self.seed = optim_cfg, max_steps, clip, seed
        self.eval_cfg, self.completions_dir = eval_cfg, completions_dir
        self.end_id, self.pad_id = tokenizer.token_id(SEP), tokenizer.token_id(PAD)
        self.layout, self.mode_token = policy.cfg.layout, mode_token
        self.start_id = tokenizer.token_id(CLS) if self.layout == "encoder_decoder" else None
        self.metric_names = algorithm.validation_metrics
        self.val_metrics = torch.nn.ModuleDict({name.replace("/", "__"): MeanMetric() for name in self.metric_names})
        self.val_rows: list[dict] = []
        self.val_scores: list[torch.Tensor] = []  # this evaluation's held-out rewards, in match order
        self.reference_scores: dict[int, torch.Tensor] = {}  # the reference's, per held-out batch (fixed draws)
        self.evaluations: dict[int, torch.Tensor] = {}  # step -> that checkpoint's held-out rewards (checkpointed)
        # The KL penalty's weight, which rl.kl_target moves (checkpointed); online DPO's beta plays its part there.
        self.kl_coef = algorithm.initial_kl_coef()

    def train(self, mode: bool = True) -> RLModule:
        super().train(mode)
        self.reference.eval()  # frozen: never in training mode (dropout), never stepped
        if self.opponent is not None:
            self.opponent.eval()
        return self

    def transfer_batch_to_device(self, batch: Any, device: torch.device, dataloader_idx: int) -> Any:
        return batch  # prompts are text; rollouts are made on the device

    def rollouts(
        self, prompts: list[Prompt], group: int, seed: list[int], model: Backbone | None = None
    ) -> tuple[Rollouts, torch.Tensor, list[str]]:
        """`group` completions per prompt from the policy (or `model`), their texts and (prompts, group) rewards."""
        generator = torch.Generator(device=self.device).manual_seed(_seed(seed))
        ids = self.encode([p.text for p in prompts])
        cfg = self.algorithm.cfg
        model = self.policy if model is None else model
        out = sample(
            model,
            ids,
            group,
            max_new_tokens=cfg.max_new_tokens,
            temperature=cfg.temperature,
            end_id=self.end_id,
            pad_id=self.pad_id,
            generator=generator,
            start_id=self.start_id,
        )
        texts = self.tokenizer.tokenizer.decode_batch(out.completions())
        assert self.reward is not None
        scored = self.reward.score([p for p in prompts for _ in range(group)], texts, out.ended.tolist())
        return out, torch.tensor(scored, device=self.device).view(len(prompts), group), texts

    def encode(self, prompts: list[str]) -> list[list[int]]:
        """The token ids the policy reads for each prompt (see `lmlab.generation.model_input`)."""
        tok = self.tokenizer.tokenizer
        return [
            model_input(e.ids, tok, self.layout, self.mode_token)
            for e in tok.encode_batch(prompts, add_special_tokens=False)
        ]

    @torch.no_grad()
    def scored(self, out: Rollouts) -> tuple[TokenScores, TokenScores]:
        """The policy's and the reference's scores of the rollouts' completion tokens (no gradient)."""
        return token_scores(self.policy, out), token_scores(self.reference, out)

    def measured(self, out: Rollouts, rewards: torch.Tensor, now: TokenScores, ref: TokenScores) -> dict:
        """The TRL-named metrics of a batch of rollouts, from the policy's and the reference's scores of them."""
        kl = kl_per_token(now.logprobs.detach(), ref.logprobs, KL_METRIC)
        return {
            "reward": rewards.mean(),
            "reward_std": rewards.std() if rewards.numel() > 1 else rewards.new_zeros(()),
            "kl": masked_mean(kl, out.targets),
            "entropy": masked_mean(now.entropy.detach(), out.targets),
            "completions/mean_length": out.lengths().float().mean(),
            "completions/eos_frac": out.ended.float().mean(),
        }

    def implicit_rewards(self, pairs: list[PreferencePair]) -> tuple[torch.Tensor, torch.Tensor]:
        """beta x (log policy - log reference) of each pair's chosen and rejected completion (whole sequences)."""
        encode = self.tokenizer.tokenizer.encode_batch
        prompts = self.encode([p.prompt for p in pairs])
        rows = []
        for side in ("chosen", "rejected"):
            completions = encode([getattr(p, side) for p in pairs], add_special_tokens=False)
            rows += [(p, [*c.ids, self.end_id], True) for p, c in zip(prompts, completions, strict=True)]
        out = pack(rows, 1, self.pad_id, self.device, self.start_id)
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
        self.algorithm.step(self, batch)

    def draw_opponent(self) -> Backbone:
        """The reference or one of the pooled snapshots, drawn uniformly from (seed, step)."""
        choices = [0, *sorted(self.pool)]
        drawn = choices[int(np.random.default_rng([self.seed, self.global_step, 2]).integers(len(choices)))]
        if drawn == 0:
            self.opponent_step = 0
            return self.reference
        assert self.opponent is not None
        if self.opponent_step != drawn:
            self.opponent.load_state_dict(self.pool[drawn])
        self.opponent_step = drawn
        return self.opponent

    def update(self, loss: torch.Tensor) -> None:
        """One optimiser step on `loss`'s gradient, clipped to `clip` (the caller steps the schedule); a non-finite
        loss stops the run before it reaches the weights (manual optimisation: no callback sees the loss)."""

        check_finite(loss.detach(), self.global_step)  # before backward: a NaN loss never reaches a gradient

        def backward() -> dict[str, torch.Tensor]:
            self.manual_backward(loss)
            return {"loss": loss}

        manual_step(self, backward, clip=self.clip)

    def validation_step(self, batch: list, batch_idx: int) -> None:
        self.algorithm.validate(self, batch, batch_idx)

    def on_validation_epoch_end(self) -> None:
        metrics = {f"val/{name}": self.val_metric(name).compute() for name in self.metric_names}
        for name in self.metric_names:
            self.val_metric(name).reset()
        if self.val_scores and not self.trainer.sanity_checking:
            scores = cast(torch.Tensor, self.all_gather(torch.cat(self.val_scores))).flatten().cpu()
            self.evaluations[self.global_step] = scores
            steps = sorted(self.evaluations)
            ratings = elo_ratings([self.evaluations[s] for s in steps])
            metrics["val/elo"] = torch.tensor(ratings[-1])
            self._write_elo_table(steps, ratings)
        self.val_scores = []
        self.log_dict(metrics, prog_bar=True)
        if self.completions_dir is not None and self.val_rows and not self.trainer.sanity_checking:
            self.completions_dir.mkdir(parents=True, exist_ok=True)
            path = self.completions_dir / f"step{self.global_step}.jsonl"
            path.write_text("".join(json.dumps(row) + "\n" for row in self.val_rows))
        self.val_rows = []

    def _write_elo_table(self, steps: list[int], ratings: list[float]) -> None:
        """Every evaluated checkpoint's Elo and win rate against the first (the reference), as of this evaluation."""
        if self.completions_dir is None:
            return
        first = self.evaluations[steps[0]]
        rows = [
            {"step": s, "elo": round(r, 1), "win_rate_vs_reference": float(judge(self.evaluations[s], first).mean())}
            for s, r in zip(steps, ratings, strict=True)
        ]
        self.completions_dir.mkdir(parents=True, exist_ok=True)
        (self.completions_dir / ELO_FILE).write_text(json.dumps(rows, indent=1) + "\n")

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["rl_evaluations"] = dict(self.evaluations)
        checkpoint["rl_kl_coef"] = self.kl_coef
        checkpoint["rl_pool"] = dict(self.pool)

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.evaluations = dict(checkpoint.get("rl_evaluations", {}))
        self.kl_coef = float(checkpoint.get("rl_kl_coef", self.kl_coef))
        self.pool = dict(checkpoint.get("rl_pool", {}))
        self.opponent_step = None  # the opponent module's weights come from the pool when next drawn

    def val_metric(self, name: str) -> MeanMetric:
        return cast(MeanMetric, self.val_metrics[name.replace("/", "__")])

    def configure_optimizers(self) -> OptimizerLRSchedulerConfig:
        return lightning_optimizers(self.policy, self.optim_cfg, self.max_steps)


def _seed(parts: list[int]) -> int:
    """One 63-bit seed from several integers (numpy's SeedSequence mixing)."""
    return int(np.random.SeedSequence(parts).generate_state(1, dtype=np.uint64)[0] >> 1)
