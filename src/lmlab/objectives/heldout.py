"""Held-out scoring of a backbone under an objective: the validation split of a corpus config, read with a given
tokenizer and the objective's fixed validation transform (masking of epoch 0), and the objective's loss (and
perplexity, for token-prediction objectives) over it. Used by `evaluate.py` and by stages that compare a model with
its starting point (RL: the policy's LM loss against the reference's)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import torch

from lmlab.data.config import DataConfig
from lmlab.data.datamodule import PretrainDataModule
from lmlab.data.tokenizer import TrainedTokenizer
from lmlab.errors import InputError
from lmlab.models import Backbone
from lmlab.objectives.base import Objective


def validation_batches(
    data_cfg: DataConfig,
    tokenizer: TrainedTokenizer,
    objective: Objective,
    cache_dir: Path,
    seed: int,
    max_batches: int,
) -> list[dict]:
    """The validation batches of `data_cfg` tokenized with `tokenizer` (`max_batches` > 0: only the first ones)."""
    data_cfg = replace(data_cfg, tokenizer=replace(data_cfg.tokenizer, path=str(tokenizer.path)))
    data = PretrainDataModule(data_cfg, cache_dir, seed)
    data.prepare(splits=("validation",))
    data.set_transform(objective.transform)
    return [b for i, b in enumerate(data.val_dataloader()) if not max_batches or i < max_batches]


@torch.no_grad()
def heldout_scores(objective: Objective, backbone: Backbone, head: torch.nn.Module, batches: list[dict]) -> dict:
    total_loss = total_targets = total_tokens = 0.0
    for batch in batches:
        out = objective.forward(backbone, head, batch)
        total_loss += float(out.loss) * float(out.n_targets)
        total_targets += float(out.n_targets)
        total_tokens += float(batch["n_tokens"])
    if total_targets == 0:
        raise InputError(
            f"the evaluation found no token to score ({len(batches)} batches, {total_tokens:.0f} tokens): an "
            "evaluation over nothing has no loss or perplexity; give more text, a larger data.block_size, or a "
            "tokenizer that reads the text"
        )
    loss = total_loss / total_targets
    metrics = {"loss": loss, "targets": total_targets, "tokens": total_tokens}
    if objective.loss_is_nll:
        metrics["ppl"] = float(torch.exp(torch.tensor(loss)))
    return metrics
