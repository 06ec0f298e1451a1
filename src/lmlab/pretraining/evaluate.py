"""Held-out evaluation of a pretraining run on any corpus config: its own objective's loss (and perplexity,
for token-prediction objectives) on the corpus' validation split, read with the run's tokenizer — optionally after
adapting to that text: a few SGD steps of the run's objective on its first tokens (the support), scoring the rest
(the query), so that runs are compared on how fast they adapt to a new domain, with the same budget."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch
from hydra.core.config_store import ConfigStore

from lmlab.config_schema import at_least
from lmlab.data.config import DataConfig
from lmlab.errors import InputError
from lmlab.objectives import available_objectives, build_objective
from lmlab.objectives.heldout import heldout_scores, validation_batches
from lmlab.runs.config import PathsConfig
from lmlab.runs.export_dir import load_checked, strip_prefix
from lmlab.runs.starting_point import load_run


@dataclass
class AdaptConfig:
    """`steps` > 0: adapt before scoring — `steps` full-batch SGD steps (lr `lr`) of the run's own objective on the
    validation batches that hold the first `support_tokens` tokens; the batches after them are scored, before and
    after."""

    steps: int = 0
    support_tokens: int = 512
    lr: float = 1e-2

    def validate(self) -> None:
        at_least("adapt.steps", self.steps, 0)
        at_least("adapt.support_tokens", self.support_tokens, 1)
        if not self.lr > 0:
            raise InputError(f"adapt.lr must be > 0, got {self.lr}")


@dataclass
class EvaluateConfig:
    """Schema of `evaluate.py` (conf/evaluate.yaml)."""

    run: str = "???"
    data: DataConfig = field(default_factory=DataConfig)
    paths: PathsConfig = field(default_factory=PathsConfig)
    seed: int = 0
    max_batches: int = 0  # 0 = the whole validation split
    tracking_uri: str = ""
    adapt: AdaptConfig = field(default_factory=AdaptConfig)

    def validate(self) -> None:
        at_least("max_batches", self.max_batches, 0)


def register_evaluate_configs() -> None:
    ConfigStore.instance().store(name="evaluate_schema", node=EvaluateConfig)


def evaluate_run(
    run: str,
    data_cfg: DataConfig,
    cache_dir: Path,
    tracking_uri: str | None,
    seed: int = 0,
    max_batches: int = 0,
    adapt: AdaptConfig | None = None,
) -> dict[str, float]:
    """`max_batches` > 0 evaluates only the first batches. Masking (MLM-style objectives) is the fixed
    validation masking of epoch 0, so numbers are comparable across runs. With `adapt.steps` > 0 the metrics are
    the query's after adaptation, and `*_before` its metrics before."""
    exported, _ = load_run(run, tracking_uri, cache_dir)
    if exported.objective_name not in available_objectives():
        raise InputError(
            f"run={run} records no pretraining objective to score it under (objective {exported.objective_name!r}): "
            "evaluate.py scores a pretraining run, or an hf: model with its pretraining head (BertForMaskedLM, "
            "GPT-2, Llama, T5), under that objective; a fine-tune is scored by its task's metrics in its own run"
        )
    if data_cfg.block_size > exported.model_cfg.max_positions:
        raise InputError(
            f"data.block_size={data_cfg.block_size} exceeds the run's model.max_positions="
            f"{exported.model_cfg.max_positions}"
        )
    objective = build_objective(exported.objective, exported.tokenizer)
    backbone = exported.backbone().eval()
    head = objective.build_head(exported.model_cfg).eval()
    load_checked(head, strip_prefix(exported.weights, "head."), str(exported.path))
    batches = validation_batches(data_cfg, exported.tokenizer, objective, cache_dir, seed, max_batches)
    if adapt is None or adapt.steps == 0:
        return heldout_scores(objective, backbone, head, batches)
    support, query = _split_support(batches, adapt.support_tokens)
    before = heldout_scores(objective, backbone, head, query)
    optimiser = torch.optim.SGD([*backbone.parameters(), *head.parameters()], lr=adapt.lr)
    for _ in range(adapt.steps):
        optimiser.zero_grad()
        for batch in support:
            (objective.forward(backbone, head, batch).loss / len(support)).backward()
        optimiser.step()
    after = heldout_scores(objective, backbone, head, query)
    return {
        **after,
        **{f"{key}_before": value for key, value in before.items() if key in ("loss", "ppl")},
        "support_tokens": float(sum(float(b["n_tokens"]) for b in support)),
        "adapt_steps": float(adapt.steps),
    }


def _split_support(batches: list[dict], support_tokens: int) -> tuple[list[dict], list[dict]]:
    """The first whole batches holding at least `support_tokens` tokens, and the rest."""
    seen = 0
    for i, batch in enumerate(batches):
        seen += int(batch["n_tokens"])
        if seen >= support_tokens:
            if i + 1 == len(batches):
                break
            return batches[: i + 1], batches[i + 1 :]
    total = sum(int(b["n_tokens"]) for b in batches)
    raise InputError(
        f"adapt.support_tokens={support_tokens}: the evaluated validation text has {total} tokens in {len(batches)} "
        "batches, which leaves no batch to score after the support; lower adapt.support_tokens or give more text"
    )
