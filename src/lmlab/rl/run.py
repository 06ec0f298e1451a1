"""An RL run: the policy starts from a run that writes text (decoder, prefix-LM or encoder-decoder), a frozen copy
is the reference, prompts are split into training and held-out ones; Lightning (checkpoints, exact resume, signals,
MLflow) runs the updates, then the policy is exported as a run of its own objective (so generate.py, evaluate.py
and fine-tuning use it like any run) and its loss under that objective on ordinary text is measured against the
reference's."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import pytorch_lightning as pl
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig
from torch.utils.data import DataLoader

from lmlab.errors import InputError
from lmlab.generation import GENERATIVE_LAYOUTS, model_input
from lmlab.objectives import build_objective, objective_traits
from lmlab.objectives.heldout import heldout_scores, validation_batches
from lmlab.rl.algorithms import algorithm_class
from lmlab.rl.config import RLConfig
from lmlab.rl.module import RLModule
from lmlab.rl.preferences import read_pairs
from lmlab.rl.prompts import read_prompts, split_held_out
from lmlab.rl.rewards import Reward, RewardContext, reward_class
from lmlab.runs.config_drift import start_inputs
from lmlab.runs.driver import Export, Stage, run_stage
from lmlab.runs.entry import lead_process
from lmlab.runs.export_dir import ExportedRun
from lmlab.runs.starting_point import load_run
from lmlab.runs.step_loader import ExampleStream, StepLoader
from lmlab.tracking.mlflow_run import MlflowRun

log = logging.getLogger(__name__)


def rl(cfg: DictConfig, run_dir: Path) -> dict[str, float]:
    """Fine-tune the policy against the reward as configured; returns the final metrics."""
    return run_stage(cfg, run_dir, ReinforcementLearning)


class ReinforcementLearning(Stage[RLConfig]):
    """A policy trained against a reward (or on preference pairs) with a frozen reference; exported as a run of its
    own objective, with what RL cost its language model."""

    schema = RLConfig
    module: RLModule
    clips_itself = True

    def setup(self) -> None:
        conf = self.conf
        self.algo_cfg = conf.algorithm_config()
        self.policy, lineage = load_run(conf.policy, conf.logger.tracking_uri, Path(conf.paths.cache_dir))
        _check_policy(self.policy, conf.policy)
        self.data = (
            _preference_inputs(conf, self.policy) if conf.preferences_used() else _reward_inputs(conf, self.policy)
        )
        self.inputs = start_inputs(self.policy.tokenizer.fingerprint, self.policy.weights)
        log.info("RL: %s, %s", self.algo_cfg.name, self.data.what)
        hf_tags = {k: v for k, v in lineage.items() if k.startswith("lmlab.hf_")}
        # An hf: policy is named by its source and described by its lmlab.hf_* tags.
        self.policy_run = self.policy.run_id or (conf.policy if hf_tags else str(self.policy.path))
        self.hf_tags = hf_tags
        t = conf.trainer
        self.module = RLModule(
            self.policy.backbone(),
            algorithm_class(self.algo_cfg.name)(self.algo_cfg),
            reward=self.data.reward,
            tokenizer=self.policy.tokenizer,
            optim_cfg=conf.optim,
            max_steps=t.max_steps,
            clip=t.gradient_clip_val,
            seed=conf.seed,
            eval_cfg=conf.eval,
            completions_dir=self.run_dir / "completions" if lead_process() else None,
            mode_token=objective_traits(self.policy.objective_name).mode_token,
        )

    def tags(self) -> dict[str, str]:
        return {
            "lmlab.kind": "rl",
            "lmlab.rl": self.algo_cfg.name,
            "lmlab.reward": self.data.source,
            "lmlab.policy_run": self.policy_run,
            **self.hf_tags,
            "lmlab.policy_objective": self.policy.objective_name,
            "lmlab.tokenizer_fingerprint": self.policy.tokenizer.fingerprint,
            **(self.data.reward.lineage() if self.data.reward is not None else {}),
        }

    def run_name(self) -> str:
        return f"{self.algo_cfg.name}-{self.data.source}-{self.run_dir.name}"

    @property
    def monitor(self) -> tuple[str, str]:
        return self.data.monitor, "max"

    def fit(self, trainer: pl.Trainer, ckpt_path: Path | None) -> None:
        per_step = self.data.per_step
        held_out: DataLoader = DataLoader(self.data.held_out, batch_size=per_step, collate_fn=list)  # type: ignore[arg-type]
        if ckpt_path is None:  # the starting point's held-out figures (step 0) and completions, to compare with
            trainer.validate(self.module, dataloaders=held_out, verbose=False)
        stream = ExampleStream(self.data.train, self.conf.trainer.max_steps * per_step, self.conf.seed)
        trainer.fit(
            self.module,
            train_dataloaders=StepLoader(stream, per_step, lambda: trainer.global_step),
            val_dataloaders=held_out,
            ckpt_path=ckpt_path,
            weights_only=True,
        )

    def export(self) -> Export:
        metadata = {
            "objective": json.dumps(self.policy.objective),
            "rl": self.algo_cfg.name,
            "lmlab.policy_run": self.policy_run,
        }
        weights = torch.nn.ModuleDict({"backbone": self.module.policy})
        return Export(weights, self.policy.model_cfg, self.policy.tokenizer, metadata)

    def after_export(self, export_dir: Path, tracked: MlflowRun | None) -> dict[str, float]:
        if tracked is not None:
            tracked.client.log_artifacts(tracked.run_id, str(self.run_dir / "completions"), "completions")
        return _lm_losses(self.module, self.policy, self.conf)


def _lm_losses(module: RLModule, policy: ExportedRun, conf: RLConfig) -> dict[str, float]:
    """The policy's and the reference's loss under the policy's own pretraining objective (a causal LM's next-token
    loss, a span run's span corruption) on `data`'s validation text: what RL cost the language model."""
    objective = build_objective(policy.objective, policy.tokenizer)
    batches = validation_batches(
        conf.data, policy.tokenizer, objective, Path(conf.paths.cache_dir), conf.seed, conf.eval.lm_batches
    )
    head = objective.build_head(policy.model_cfg)  # a generative objective's head is the backbone's projection
    device = module.device
    moved = [{k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in b.items()} for b in batches]
    scores = {
        name: heldout_scores(objective, backbone.eval(), head, moved)["loss"]
        for name, backbone in (("lm/loss", module.policy), ("lm/loss_reference", module.reference))
    }
    return {**scores, "lm/loss_ratio": scores["lm/loss"] / scores["lm/loss_reference"]}


@dataclass
class _Inputs:
    """What a run learns from: training and held-out prompts (with the reward) or preference pairs."""

    train: list
    held_out: list
    per_step: int
    reward: Reward | None
    source: str  # the reward's name, or "preferences"
    monitor: str  # the held-out metric the best checkpoint is chosen by
    what: str


def _reward_inputs(conf: RLConfig, policy: ExportedRun) -> _Inputs:
    algo_cfg, reward_cfg = conf.algorithm_config(), conf.reward_config()
    context = RewardContext(policy.tokenizer, conf.logger.tracking_uri, Path(conf.paths.cache_dir))
    reward = reward_class(reward_cfg.name)(reward_cfg, context)
    prompts = read_prompts(conf.prompts)
    reward.check_prompts(prompts)
    n = algo_cfg.max_new_tokens
    _check_lengths([(p.text, "") for p in prompts], policy, n, f"rl.max_new_tokens={n}")
    train, held_out = split_held_out(prompts, conf.prompts.eval_fraction, conf.prompts.split_seed)
    what = (
        f"reward {reward_cfg.name}, {len(train)} training and {len(held_out)} held-out prompts, "
        f"{algo_cfg.group} completions each"
    )
    return _Inputs(train, held_out, algo_cfg.prompts_per_step, reward, reward_cfg.name, "val/reward", what)


def _preference_inputs(conf: RLConfig, policy: ExportedRun) -> _Inputs:
    algo_cfg = conf.algorithm_config()
    _refuse_unused_reward(algo_cfg.name)
    pairs = read_pairs(Path(conf.preferences).expanduser())
    longest = {(p.prompt, max(p.chosen, p.rejected, key=len)) for p in pairs}
    _check_lengths(sorted(longest), policy, 1, "the end token")
    train, held_out = split_held_out(pairs, conf.prompts.eval_fraction, conf.prompts.split_seed)
    what = f"{len(train)} training and {len(held_out)} held-out preference pairs from {conf.preferences}"
    return _Inputs(train, held_out, algo_cfg.pairs_per_step, None, "preferences", "val/rewards/accuracies", what)


def _check_policy(policy: ExportedRun, source: str) -> None:
    if policy.model_cfg.layout not in GENERATIVE_LAYOUTS:
        raise InputError(
            f"policy={source} is an {policy.model_cfg.layout} run ({policy.objective_name}), which predicts masked "
            f"tokens; RL fine-tuning samples completions from a run that writes text: model.layout in "
            f"{list(GENERATIVE_LAYOUTS)} (e.g. objective=clm, prefix_lm or span)"
        )


def _refuse_unused_reward(name: str) -> None:
    """A preference algorithm neither samples prompts nor scores with a reward: a single run's override of those
    would be ignored. In a sweep (`-m rl=grpo,dpo reward=keyword`) they are meant for the reward algorithms."""
    if not HydraConfig.initialized() or HydraConfig.get().mode == RunMode.MULTIRUN:
        return
    unused = ("reward", "prompts.source", "prompts.file", "prompts.world")
    ignored = [o for o in HydraConfig.get().overrides.task if o.lstrip("+~").startswith(unused)]
    if ignored:
        raise InputError(
            f"{ignored} would be ignored: rl={name} learns from preferences= pairs (no reward, no sampled prompts)"
        )


def _check_lengths(rows: list[tuple[str, str]], policy: ExportedRun, extra: int, what: str) -> None:
    """Every (prompt, completion) row (the completion empty for prompts to sample from) + `extra` tokens (`what`:
    "rl.max_new_tokens=N" or "the end token") fits the policy's positions: one sequence for a decoder or prefix-LM;
    for an encoder-decoder, the prompt (as its encoder reads it) and the start token + completion apart."""
    tok, limit, layout = policy.tokenizer.tokenizer, policy.model_cfg.max_positions, policy.model_cfg.layout
    mode = objective_traits(policy.objective_name).mode_token
    prompts = tok.encode_batch([p for p, _ in rows], add_special_tokens=False)
    completions = tok.encode_batch([c for _, c in rows], add_special_tokens=False)
    empty = [text for (text, _), e in zip(rows, prompts, strict=True) if not e.ids]
    if empty:
        raise InputError(f"{len(empty)} prompt(s) are empty after tokenization, e.g. {empty[0]!r}")
    source = {text: len(model_input(e.ids, tok, layout, mode)) for (text, _), e in zip(rows, prompts, strict=True)}
    written = {text: len(c.ids) + extra for (text, _), c in zip(rows, completions, strict=True)}
    if layout == "encoder_decoder":
        longest = max(source, key=lambda text: source[text])
        if source[longest] > limit:
            raise InputError(
                f"the longest prompt ({source[longest]} tokens as the encoder reads it, {longest[:60]!r}) exceeds the "
                f"policy's model.max_positions={limit}; shorten the prompts"
            )
        most = max(written.values())
        if 1 + most > limit:
            raise InputError(
                f"the decoder's start token + the longest completion + {what} = {1 + most} positions exceeds the "
                f"policy's model.max_positions={limit}; generate fewer tokens (or shorten the completions)"
            )
        return
    total = {text: source[text] + written[text] for text in source}
    longest = max(total, key=lambda text: total[text])
    if total[longest] > limit:
        raise InputError(
            f"the longest prompt ({source[longest]} tokens, {longest[:60]!r}) + its completion + {what} = "
            f"{total[longest]} positions exceeds the policy's model.max_positions={limit}; shorten the prompts "
            "(and completions) or generate fewer tokens"
        )
