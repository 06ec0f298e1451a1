"""The inner loop every gradient-based meta-learner shares: a few SGD steps on an episode's support set, on fast
weights (a fresh N-way linear head, and the backbone tensors `meta.adapt` names) computed functionally, so the
module's own parameters are never changed.

Second-order MAML differentiates through those steps (`create_graph=True`); first-order detaches the inner
gradients. The encoder is called through `torch.func.functional_call` with the fast backbone tensors.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call
from torch.nn.attention import SDPBackend, sdpa_kernel

from lmlab.errors import InputError
from lmlab.models import Backbone
from lmlab.tasks.base import contextual, pooled

log = logging.getLogger(__name__)

ADAPT = ("head", "top_k_blocks", "all")
HEAD_WEIGHT, HEAD_BIAS = "head.weight", "head.bias"


class Encoder(nn.Module):
    """A batch -> one vector per example, read as fully as the backbone's layout allows (as classification does)."""

    def __init__(self, backbone: Backbone) -> None:
        super().__init__()
        self.backbone = backbone

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return pooled(self.backbone, contextual(self.backbone, batch), batch)


def adapted_names(encoder: Encoder, adapt: str, top_k: int) -> list[str]:
    """The encoder parameters the inner loop adapts: none (head only), the top k blocks and the final norm, or all."""
    names = [name for name, p in encoder.named_parameters() if p.requires_grad]
    if adapt == "head":
        return []
    if adapt == "all":
        return names
    n_layers = encoder.backbone.cfg.n_layers
    if not 1 <= top_k <= n_layers:
        raise InputError(f"meta.top_k={top_k} must be between 1 and the backbone's {n_layers} layers")
    top = tuple(f"backbone.stack.blocks.{i}." for i in range(n_layers - top_k, n_layers))
    return [n for n in names if n.startswith(top) or n.startswith("backbone.stack.final_norm")]


@dataclass
class FastWeights:
    """The tensors an inner loop adapts: encoder tensors by name, and the N-way head."""

    encoder: dict[str, torch.Tensor]
    head: dict[str, torch.Tensor]

    def all(self) -> dict[str, torch.Tensor]:
        return {**self.encoder, **self.head}


def fresh_head(n_way: int, dim: int, like: torch.Tensor) -> dict[str, torch.Tensor]:
    """A zero head: every episode's labels are a new permutation, so no class-specific start can be learned, and
    from zero the first step's weights are the (centred) support means of each class."""
    weight = torch.zeros(n_way, dim, dtype=like.dtype, device=like.device, requires_grad=True)
    bias = torch.zeros(n_way, dtype=like.dtype, device=like.device, requires_grad=True)
    return {HEAD_WEIGHT: weight, HEAD_BIAS: bias}


def features(encoder: Encoder, fast: Mapping[str, torch.Tensor], batch: dict[str, torch.Tensor]) -> torch.Tensor:
    return functional_call(encoder, dict(fast), (batch,)) if fast else encoder(batch)


def logits(head: Mapping[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    return F.linear(x, head[HEAD_WEIGHT], head[HEAD_BIAS])


def inner_loop(
    encoder: Encoder,
    start: FastWeights,
    support: dict[str, torch.Tensor],
    steps: int,
    lr: float | Mapping[str, torch.Tensor],
    create_graph: bool,
    fixed: torch.Tensor | None = None,
) -> tuple[FastWeights, list[torch.Tensor]]:
    """`steps` SGD steps on the support loss from `start`; the adapted weights and the support loss before each
    step. With no encoder tensors to adapt, the support features are computed once (or given as `fixed`)."""
    fast = start
    losses = []
    if fixed is None and not fast.encoder:
        fixed = features(encoder, {}, support)
    for _ in range(steps):
        x = features(encoder, fast.encoder, support) if fixed is None else fixed
        loss = F.cross_entropy(logits(fast.head, x), support["label"])
        losses.append(loss.detach())
        tensors = fast.all()
        grads = torch.autograd.grad(loss, list(tensors.values()), create_graph=create_graph, allow_unused=True)
        stepped = {
            name: t if g is None else t - (lr if isinstance(lr, float) else lr[name]) * g
            for (name, t), g in zip(tensors.items(), grads, strict=True)
        }
        fast = FastWeights({n: stepped[n] for n in fast.encoder}, {n: stepped[n] for n in fast.head})
    return fast, losses


def starting_weights(encoder: Encoder, names: list[str], n_way: int, detach: bool) -> FastWeights:
    """The encoder's own tensors `names` (detached copies for evaluation) and a fresh head."""
    params = dict(encoder.named_parameters())
    own = {n: params[n].detach().requires_grad_() if detach else params[n] for n in names}
    like = next(iter(params.values()))
    return FastWeights(own, fresh_head(n_way, encoder.backbone.cfg.d_model, like))


@contextmanager
def second_order_attention(enabled: bool) -> Iterator[None]:
    """Second derivatives through scaled_dot_product_attention need its math kernel (the fused ones have no
    double backward)."""
    if not enabled:
        yield
        return
    with sdpa_kernel(SDPBackend.MATH):
        yield
