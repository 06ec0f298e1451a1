"""One optimiser step of a manually optimised stage (meta-learning, RL): the same order and the same guard in both.

Under manual optimisation no callback sees the loss before the weights change, so the finiteness check is here:
a non-finite loss or gradient stops the run before `optimizer.step()`, and the checkpoints keep the last finite
state (`lmlab.callbacks.nonfinite`)."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping

import pytorch_lightning as pl
import torch

from lmlab.callbacks.nonfinite import NonFiniteLossError, check_finite


def manual_step(
    module: pl.LightningModule, gradients: Callable[[], Mapping[str, torch.Tensor]], *, clip: float
) -> Mapping[str, torch.Tensor]:
    """Zero the gradients, let `gradients()` fill them (it returns the step's metrics, its losses among them), refuse
    a non-finite loss or gradient, clip the gradients' norm to `clip` (0: no clipping) and step the optimiser.
    Returns the metrics. The caller steps the learning-rate schedule (once per training step)."""
    optimizer = module.optimizers()
    assert not isinstance(optimizer, list), "one optimiser per stage"
    optimizer.zero_grad()
    metrics = gradients()
    for key, value in metrics.items():
        if "loss" in key:
            check_finite(value.detach(), module.global_step)
    grads = [p.grad for p in module.parameters() if p.grad is not None]
    if grads:
        norm = float(torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads])))
        if not math.isfinite(norm):
            raise NonFiniteLossError(
                f"the gradient norm is {norm} at step {module.global_step} (the loss was finite); stopping without "
                "saving these weights — lower optim.lr or raise trainer.gradient_clip_val, then rerun to resume"
            )
    if clip > 0:
        module.clip_gradients(optimizer, gradient_clip_val=clip, gradient_clip_algorithm="norm")  # type: ignore[arg-type]
    optimizer.step()
    return metrics
