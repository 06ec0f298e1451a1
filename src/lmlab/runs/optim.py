"""AdamW with decoupled weight decay on matrices only, and a warmup + decay learning-rate schedule."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from pytorch_lightning.utilities.types import OptimizerLRSchedulerConfig
from torch import nn

from lmlab.runs.config import OptimConfig

_NO_DECAY_MODULES = (nn.Embedding, nn.LayerNorm, nn.RMSNorm)


def parameter_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Weight decay on weight matrices; none on biases, norms and embeddings. Tied parameters appear once."""
    decay: list[nn.Parameter] = []
    no_decay: list[nn.Parameter] = []
    seen: set[int] = set()
    for module in model.modules():
        for param in module.parameters(recurse=False):
            if not param.requires_grad or id(param) in seen:
                continue
            seen.add(id(param))
            (no_decay if isinstance(module, _NO_DECAY_MODULES) or param.ndim < 2 else decay).append(param)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def build_optimizer(model: nn.Module, cfg: OptimConfig) -> torch.optim.AdamW:
    on_cuda = all(p.is_cuda for p in model.parameters())
    return torch.optim.AdamW(
        parameter_groups(model, cfg.weight_decay),
        lr=cfg.lr,
        betas=(cfg.betas[0], cfg.betas[1]),
        eps=cfg.eps,
        fused=on_cuda,
    )


def lr_lambda(cfg: OptimConfig, total_steps: int) -> Callable[[int], float]:
    """Multiplier of the peak learning rate at each optimiser step."""

    def factor(step: int) -> float:
        if step < cfg.warmup_steps:
            return (step + 1) / cfg.warmup_steps
        if cfg.schedule == "constant":
            return 1.0
        progress = min(1.0, (step - cfg.warmup_steps) / max(1, total_steps - cfg.warmup_steps))
        shape = 1.0 - progress if cfg.schedule == "linear" else 0.5 * (1.0 + math.cos(math.pi * progress))
        return cfg.min_lr_ratio + (1.0 - cfg.min_lr_ratio) * shape

    return factor


def lightning_optimizers(model: nn.Module, cfg: OptimConfig, total_steps: int) -> OptimizerLRSchedulerConfig:
    """What a LightningModule's `configure_optimizers` returns: AdamW and the per-step schedule."""
    optimizer = build_optimizer(model, cfg)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(cfg, total_steps))
    return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}
