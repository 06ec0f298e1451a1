"""What one optimiser step of a pretraining config costs, so runs of different objectives can be given equal
training FLOPs (an objective study's `budget=flops`)."""

from __future__ import annotations

from lmlab.pretraining.config import TrainConfig
from lmlab.pretraining.run import build_pretraining


def flops_per_step(conf: TrainConfig) -> int:
    """Training FLOPs (forward and backward) of one optimiser step, as the objective counts them, on the config's
    first training batch (the objective's transform decides how many positions are predicted)."""
    data, _, module, _ = build_pretraining(conf)
    batch = next(iter(data.train_dataloader()))
    return module.objective.flops_per_batch(module.backbone, batch) * conf.trainer.accumulate_grad_batches
