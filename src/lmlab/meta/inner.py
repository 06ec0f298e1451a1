"""The inner loop every gradient-based meta-learner shares: a few SGD steps on an episode's support set, on fast
weights computed functionally, so the module's own parameters are never changed.

What is adapted and scored is a learner's business (`meta/learners.py`): a classifier (a fresh N-way head over
pooled features, and the backbone tensors `meta.adapt` names) or a language model (the decoder's own tied LM head,
next-token loss, the `meta.adapt` tensors). Second-order MAML differentiates through the steps
(`create_graph=True`); first-order detaches the inner gradients.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel

from lmlab.errors import InputError

ADAPT = ("head", "top_k_blocks", "all")
# Fast weights: tensors by name (a module's parameter names, plus the learner's own, e.g. a fresh head).
Fast = dict[str, torch.Tensor]


@dataclass
class Prediction:
    loss: torch.Tensor
    correct: torch.Tensor  # query examples (classes) or next tokens (domains) predicted right
    total: int


# A batch's prediction as a function of the fast weights.
Predictor = Callable[[Fast], Prediction]


def adapted_names(module: nn.Module, n_layers: int, adapt: str, top_k: int) -> list[str]:
    """The parameters of `module.backbone` (of `n_layers` blocks) the inner loop adapts: none (head only), the top k
    blocks and the final norm, or all."""
    names = [name for name, p in module.named_parameters() if p.requires_grad and name.startswith("backbone.")]
    if adapt == "head":
        return []
    if adapt == "all":
        return names
    if not 1 <= top_k <= n_layers:
        raise InputError(f"meta.top_k={top_k} must be between 1 and the backbone's {n_layers} layers")
    top = tuple(f"backbone.stack.blocks.{i}." for i in range(n_layers - top_k, n_layers))
    return [n for n in names if n.startswith(top) or n.startswith("backbone.stack.final_norm")]


def inner_loop(
    predict: Predictor,
    start: Fast,
    steps: int,
    lr: float | Mapping[str, torch.Tensor],
    create_graph: bool,
) -> tuple[Fast, list[torch.Tensor]]:
    """`steps` SGD steps on `predict`'s loss from `start`: the adapted weights and the loss before each step."""
    fast = start
    losses = []
    for _ in range(steps):
        value = predict(fast).loss
        losses.append(value.detach())
        grads = torch.autograd.grad(value, list(fast.values()), create_graph=create_graph, allow_unused=True)
        fast = {
            name: t if g is None else t - (lr if isinstance(lr, float) else lr[name]) * g
            for (name, t), g in zip(fast.items(), grads, strict=True)
        }
    return fast, losses


def detached(fast: Fast) -> Fast:
    """The same values as new leaves (a first-order step, or evaluation)."""
    return {name: t.detach().requires_grad_() for name, t in fast.items()}


@contextmanager
def second_order_attention(enabled: bool) -> Iterator[None]:
    """Second derivatives through scaled_dot_product_attention need its math kernel (the fused ones have no
    double backward)."""
    if not enabled:
        yield
        return
    with sdpa_kernel(SDPBackend.MATH):
        yield
