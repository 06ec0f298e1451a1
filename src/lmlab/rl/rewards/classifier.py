"""A fine-tuned classification run as a reward model: the probability it gives `reward.label` to the prompt and its
completion (read as the classifier was trained to read text: [CLS] text [SEP], its task.max_length).

The reward run must share the policy's tokenizer: a reward model reading text through other normalisation (case,
unknown pieces) would score text other than what the policy wrote, so a different tokenizer is refused by name."""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
import torch
from omegaconf import OmegaConf

from lmlab.errors import InputError
from lmlab.rl.prompts import Prompt
from lmlab.rl.rewards.base import Reward, RewardContext
from lmlab.runs.export_dir import load_checked, load_export, strip_prefix
from lmlab.tasks import family_class
from lmlab.tasks.base import contextual, pooled
from lmlab.tasks.examples import TextExample


@dataclass
class ClassifierConfig:
    name: str = "classifier"
    run: str = ""  # a classification fine-tuning run: an MLflow run id, or its output or export directory
    label: str = ""  # the reward is the classifier's probability of this label
    batch_size: int = 64

    def validate(self) -> None:
        if not self.run or not self.label:
            raise InputError("reward=classifier needs reward.run (a classification fine-tuning run) and reward.label")


class ClassifierReward(Reward):
    Config = ClassifierConfig

    def __init__(self, cfg: ClassifierConfig, context: RewardContext) -> None:
        super().__init__(cfg, context)
        exported = load_export(cfg.run, context.tracking_uri, context.cache_dir)
        source = f"reward.run={cfg.run}"
        if exported.tokenizer.fingerprint != context.tokenizer.fingerprint:
            raise InputError(
                f"{source} reads text with tokenizer {exported.tokenizer.fingerprint}, the policy writes it with "
                f"{context.tokenizer.fingerprint}: a reward model must share the policy's tokenizer (fine-tune it "
                "from the policy's pretraining run, or one with the same data.tokenizer)"
            )
        config = exported.path / "config.yaml"
        recorded = OmegaConf.to_container(OmegaConf.load(config)) if config.exists() else {}
        task = recorded.get("task") if isinstance(recorded, dict) else None
        family = task.get("family") if isinstance(task, dict) else None
        if family != "classification":
            raise InputError(f"{source} is not a classification fine-tuning run (task.family={family})")
        labels = json.loads((exported.path / "labels.json").read_text())
        if cfg.label not in labels:
            raise InputError(f"reward.label={cfg.label!r} is not a label of {source}; its labels: {labels}")
        cls = family_class("classification")
        self.family = cls(cls.parse_config(task), exported.tokenizer, labels, exported.model_cfg)
        self.backbone = exported.backbone().eval()
        self.head = self.family.build_head(exported.model_cfg).eval()
        load_checked(self.head, strip_prefix(exported.weights, "head."), str(exported.path))
        self.label_index = labels.index(cfg.label)
        self.dummy = labels[0]
        self.run = exported.run_id or str(exported.path)

    def lineage(self) -> dict[str, str]:
        return {"lmlab.reward_run": self.run}

    @torch.no_grad()
    def score(self, prompts: list[Prompt], completions: list[str], ended: list[bool]) -> list[float]:
        out: list[float] = []
        texts = [f"{p.text} {c}" for p, c in zip(prompts, completions, strict=True)]
        for start in range(0, len(texts), self.cfg.batch_size):
            chunk = [self.family.encode(TextExample(t, self.dummy)) for t in texts[start : start + self.cfg.batch_size]]
            batch = {k: torch.from_numpy(np.stack([f[k] for f in chunk])) for k in chunk[0]}
            batch["padding_mask"] = torch.arange(batch["input_ids"].shape[1])[None, :] < batch["n_real"][:, None]
            logits = self.head(pooled(self.backbone, contextual(self.backbone, batch), batch))
            out += logits.float().softmax(-1)[:, self.label_index].tolist()
        return out


REWARD = ClassifierReward
