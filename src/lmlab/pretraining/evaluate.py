"""Held-out evaluation of a pretraining run on any corpus config: its own objective's loss (and perplexity,
for token-prediction objectives) on the corpus' validation split, read with the run's tokenizer."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

import torch
from hydra.core.config_store import ConfigStore

from lmlab.data.config import DataConfig
from lmlab.data.datamodule import PretrainDataModule
from lmlab.errors import InputError
from lmlab.objectives import build_objective
from lmlab.runs.config import PathsConfig
from lmlab.runs.exports import load_checked, load_export, strip_prefix


@dataclass
class EvaluateConfig:
    """Schema of `evaluate.py` (conf/evaluate.yaml)."""

    run: str = "???"
    data: DataConfig = field(default_factory=DataConfig)
    paths: PathsConfig = field(default_factory=PathsConfig)
    seed: int = 0
    max_batches: int = 0  # 0 = the whole validation split
    tracking_uri: str = ""


def register_evaluate_configs() -> None:
    ConfigStore.instance().store(name="evaluate_schema", node=EvaluateConfig)


@torch.no_grad()
def evaluate_run(
    run: str, data_cfg: DataConfig, cache_dir: Path, tracking_uri: str | None, seed: int = 0, max_batches: int = 0
) -> dict[str, float]:
    """`max_batches` > 0 evaluates only the first batches. Masking (MLM-style objectives) is the fixed
    validation masking of epoch 0, so numbers are comparable across runs."""
    exported = load_export(run, tracking_uri, cache_dir)
    data_cfg = replace(data_cfg, tokenizer=replace(data_cfg.tokenizer, path=str(exported.tokenizer.path)))
    if data_cfg.block_size > exported.model_cfg.max_positions:
        raise InputError(
            f"data.block_size={data_cfg.block_size} exceeds the run's model.max_positions="
            f"{exported.model_cfg.max_positions}"
        )
    data = PretrainDataModule(data_cfg, cache_dir, seed)
    data.prepare(splits=("validation",))
    objective = build_objective(exported.objective, exported.tokenizer)
    data.set_transform(objective.transform)
    backbone = exported.backbone().eval()
    head = objective.build_head(exported.model_cfg).eval()
    load_checked(head, strip_prefix(exported.weights, "head."), str(exported.path))
    total_loss = total_targets = total_tokens = 0.0
    for i, batch in enumerate(data.val_dataloader()):
        if max_batches and i >= max_batches:
            break
        out = objective.forward(backbone, head, batch)
        total_loss += float(out.loss) * float(out.n_targets)
        total_targets += float(out.n_targets)
        total_tokens += float(batch["n_tokens"])
    loss = total_loss / max(total_targets, 1.0)
    metrics = {"loss": loss, "targets": total_targets, "tokens": total_tokens}
    if objective.loss_is_nll:
        metrics["ppl"] = float(torch.exp(torch.tensor(loss)))
    return metrics
