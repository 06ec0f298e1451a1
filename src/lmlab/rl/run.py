"""An RL run: the policy starts from a run that writes text (decoder, prefix-LM or encoder-decoder), a frozen copy
is the reference, prompts are split into training and held-out ones; Lightning (checkpoints, exact resume, signals,
MLflow) runs the updates, then the policy is exported as a run of its own objective (so generate.py, evaluate.py
and fine-tuning use it like any run) and its loss under that objective on ordinary text is measured against the
reference's."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf
from torch.utils.data import DataLoader

from lmlab.atomic_file import check_writable_dir
from lmlab.callbacks import ValidateOnLastStep
from lmlab.callbacks.preemption import StopOnSignal, StoppedOnSignal
from lmlab.callbacks.rng_state import RngState
from lmlab.errors import InputError
from lmlab.generation import GENERATIVE_LAYOUTS, model_input
from lmlab.objectives import build_objective
from lmlab.objectives.heldout import heldout_scores, validation_batches
from lmlab.rl.algorithms import algorithm_class
from lmlab.rl.config import RLConfig
from lmlab.rl.module import RLModule
from lmlab.rl.preferences import read_pairs
from lmlab.rl.prompts import read_prompts, split_held_out
from lmlab.rl.rewards import Reward, RewardContext, reward_class
from lmlab.runs.checkpoints import LAST
from lmlab.runs.config_drift import bind_inputs, check_resume_config, start_inputs
from lmlab.runs.console import closing_summary
from lmlab.runs.entry import lead_process
from lmlab.runs.exports import ExportedRun, write_export
from lmlab.runs.resume import checkpoint_callbacks, record_start, record_stop, resume_point
from lmlab.runs.start import start_stage
from lmlab.runs.starting_point import load_run
from lmlab.runs.step_loader import StepLoader
from lmlab.runs.tracked import failure_recorded, track_run
from lmlab.runs.trainer import build_trainer, lightning_logger
from lmlab.tracking.identity import redacted

log = logging.getLogger(__name__)


def rl(cfg: DictConfig, run_dir: Path) -> dict[str, float]:
    """Fine-tune the policy against the reward as configured; returns the final metrics."""
    conf = start_stage(cfg, RLConfig)
    run_dir = Path(run_dir)
    algo_cfg = conf.algorithm_config()
    # Everything that can refuse the inputs runs before the run dir is written.
    policy, lineage = load_run(conf.policy, conf.logger.tracking_uri, Path(conf.paths.cache_dir))
    _check_policy(policy, conf.policy)
    inputs = _preference_inputs(conf, policy) if conf.preferences_used() else _reward_inputs(conf, policy)
    ckpt_dir = run_dir / "checkpoints"
    lead = lead_process()
    if lead:
        check_writable_dir(ckpt_dir, "the checkpoint directory")
        check_writable_dir(run_dir / "export", "the export directory")
    resume_from = resume_point(conf.ckpt_path, conf.resume, ckpt_dir)
    resolved = redacted(OmegaConf.to_container(cfg, resolve=True))
    changes = check_resume_config(run_dir, resolved, conf.allow_config_change) if resume_from else {}
    bound = start_inputs(policy.tokenizer.fingerprint, policy.weights)
    resuming = resume_from is not None
    changes.update(bind_inputs(run_dir, bound, resuming=resuming, allowed=conf.allow_config_change, lead=lead))
    log.info("RL: %s, %s", algo_cfg.name, inputs.what)
    resume_tags = record_start(run_dir, resolved, resume_from, changes) if lead else None
    hf_tags = {k: v for k, v in lineage.items() if k.startswith("lmlab.hf_")}
    tags = {
        "lmlab.kind": "rl",
        "lmlab.rl": algo_cfg.name,
        "lmlab.reward": inputs.source,
        # An hf: policy is named by its source and described by its lmlab.hf_* tags.
        "lmlab.policy_run": policy.run_id or (conf.policy if hf_tags else str(policy.path)),
        **hf_tags,
        "lmlab.policy_objective": policy.objective_name,
        "lmlab.tokenizer_fingerprint": policy.tokenizer.fingerprint,
        **(inputs.reward.lineage() if inputs.reward is not None else {}),
    }
    run_name = f"{algo_cfg.name}-{inputs.source}-{run_dir.name}"
    tracked = (
        track_run(conf.logger, Path(conf.paths.root), run_dir, run_name, tags, resolved, resume_tags) if lead else None
    )
    module = RLModule(
        policy.backbone(),
        algorithm_class(algo_cfg.name)(algo_cfg),
        inputs.reward,
        policy.tokenizer,
        conf.optim,
        conf.trainer.max_steps,
        conf.trainer.gradient_clip_val,
        conf.seed,
        conf.eval,
        run_dir / "completions" if lead else None,
        policy.objective_name,
    )
    stop = StopOnSignal(ckpt_dir / LAST)
    best, last = checkpoint_callbacks(ckpt_dir, inputs.monitor, "max")
    # Clipping happens in the module: Lightning clips only under automatic optimisation.
    trainer = build_trainer(
        replace(conf.trainer, gradient_clip_val=0.0),
        run_dir,
        lightning_logger(conf.logger, run_dir, tracked),
        [best, last, ValidateOnLastStep(), stop, RngState()],
    )
    dataset = _Stream(inputs.train, conf.trainer.max_steps * inputs.per_step, conf.seed)
    held_out_loader: DataLoader = DataLoader(inputs.held_out, batch_size=inputs.per_step, collate_fn=list)  # type: ignore[arg-type]
    with failure_recorded(tracked):
        try:
            if resume_from is None:  # the starting point's held-out figures (step 0) and completions, to compare with
                trainer.validate(module, dataloaders=held_out_loader, verbose=False)
            trainer.fit(
                module,
                train_dataloaders=StepLoader(dataset, inputs.per_step, lambda: trainer.global_step),
                val_dataloaders=held_out_loader,
                ckpt_path=None if resume_from is None else resume_from[0],
                weights_only=True,
            )
        except StoppedOnSignal as stopped:
            record_stop(tracked, stop, stopped)
            return {k: float(v) for k, v in trainer.callback_metrics.items()}
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
    if not lead:
        return metrics
    metadata = {
        "objective": json.dumps(policy.objective),
        "rl": algo_cfg.name,
        "global_step": str(module.global_step),
        "run_id": "" if tracked is None else tracked.run_id,
        "lmlab.policy_run": tags["lmlab.policy_run"],
    }
    export = write_export(
        run_dir / "export",
        torch.nn.ModuleDict({"backbone": module.policy}),
        policy.model_cfg,
        policy.tokenizer,
        metadata,
        {"config.yaml": OmegaConf.to_yaml(resolved)},
    )
    lm = _lm_losses(module, policy, conf)
    metrics.update(lm)
    if tracked is not None:
        for key, value in lm.items():
            tracked.client.log_metric(tracked.run_id, key, value, step=module.global_step)
        tracked.client.log_artifacts(tracked.run_id, str(run_dir / "completions"), "completions")
        tracked.client.log_artifacts(tracked.run_id, str(export))
        tracked.finish()
    log.info("%s", closing_summary(run_dir, metrics, tracked, Path(conf.paths.root), module.global_step))
    return metrics


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


class _Stream(torch.utils.data.Dataset):
    """Item i: a training item, each pass over them in a fresh order drawn from (seed, pass)."""

    def __init__(self, items: list, length: int, seed: int) -> None:
        self.items, self.length, self.seed = items, length, seed

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> object:
        n = len(self.items)
        order = np.random.default_rng([self.seed, index // n]).permutation(n)
        return self.items[int(order[index % n])]


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
    prompts = tok.encode_batch([p for p, _ in rows], add_special_tokens=False)
    completions = tok.encode_batch([c for _, c in rows], add_special_tokens=False)
    empty = [text for (text, _), e in zip(rows, prompts, strict=True) if not e.ids]
    if empty:
        raise InputError(f"{len(empty)} prompt(s) are empty after tokenization, e.g. {empty[0]!r}")
    source = {
        text: len(model_input(e.ids, tok, layout, policy.objective_name))
        for (text, _), e in zip(rows, prompts, strict=True)
    }
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
