"""What a mapping between lmlab's backbone and a Hugging Face architecture is: the config fields it reads and writes,
the options it cannot express, and a table of tensors, each a rule from lmlab's names to the HF base model's.

A rule names one lmlab tensor, the HF tensor(s) it becomes and how: as it is, transposed (GPT-2's Conv1D), split in
equal parts (lmlab's fused query/key/value), with the rotary channels reordered (lmlab rotates interleaved pairs,
HF rotates the two halves of a head) or rescaled (T5 does not divide attention scores by sqrt(head size)). Both
directions come from the same table, so an export and an import cannot drift apart.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from lmlab.errors import InputError
from lmlab.models import ModelConfig

Part = Callable[[torch.Tensor, ModelConfig], torch.Tensor]  # an invertible change of one HF tensor


def same(t: torch.Tensor, cfg: ModelConfig) -> torch.Tensor:
    return t


def rotary_halves(t: torch.Tensor, cfg: ModelConfig) -> torch.Tensor:
    """Rows of a query or key projection (weight or bias) from lmlab's interleaved rotary pairs (2i, 2i+1) to HF's
    split halves (i, i + head/2): per head, the even channels first, then the odd ones."""
    head = cfg.d_model // cfg.n_heads
    order = torch.cat([torch.arange(0, head, 2), torch.arange(1, head, 2)])
    return t.reshape(cfg.n_heads, head, *t.shape[1:])[:, order].reshape(t.shape)


def rotary_pairs(t: torch.Tensor, cfg: ModelConfig) -> torch.Tensor:
    """The inverse of `rotary_halves`."""
    head = cfg.d_model // cfg.n_heads
    order = torch.cat([torch.arange(0, head, 2), torch.arange(1, head, 2)]).argsort()
    return t.reshape(cfg.n_heads, head, *t.shape[1:])[:, order].reshape(t.shape)


def unscaled_query(t: torch.Tensor, cfg: ModelConfig) -> torch.Tensor:
    """T5 scores q.k without dividing by sqrt(head size); lmlab's attention divides, so the query carries it."""
    return t * (cfg.d_model // cfg.n_heads) ** -0.5


def scaled_query(t: torch.Tensor, cfg: ModelConfig) -> torch.Tensor:
    return t * (cfg.d_model // cfg.n_heads) ** 0.5


@dataclass(frozen=True)
class Rule:
    """lmlab tensor `ours` <-> HF tensors `theirs`: split along dim 0 into len(theirs) parts (one part: as it is),
    `transpose`d (Conv1D stores (in, out)), each part changed by `out[i]` on export and `back[i]` on import."""

    ours: str
    theirs: tuple[str, ...]
    transpose: bool = False
    out: tuple[Part, ...] = ()
    back: tuple[Part, ...] = ()

    def to_hf(self, t: torch.Tensor, cfg: ModelConfig) -> dict[str, torch.Tensor]:
        parts = t.chunk(len(self.theirs), dim=0)
        changes = self.out or (same,) * len(parts)
        return {
            name: (change(part, cfg).t() if self.transpose else change(part, cfg)).contiguous()
            for name, part, change in zip(self.theirs, parts, changes, strict=True)
        }

    def from_hf(self, state: dict[str, torch.Tensor], cfg: ModelConfig) -> torch.Tensor:
        changes = self.back or (same,) * len(self.theirs)
        parts = [
            change(state[name].t() if self.transpose else state[name], cfg)
            for name, change in zip(self.theirs, changes, strict=True)
        ]
        return torch.cat(parts, dim=0) if len(parts) > 1 else parts[0]


def linear(ours: str, theirs: str | tuple[str, ...], bias: bool = True, **kind: Any) -> list[Rule]:
    """The rules of a linear layer's weight and (with `bias`) its bias."""
    names = (theirs,) if isinstance(theirs, str) else theirs
    rules = [Rule(f"{ours}.weight", tuple(f"{n}.weight" for n in names), **kind)]
    if bias:
        rules.append(Rule(f"{ours}.bias", tuple(f"{n}.bias" for n in names), **{**kind, "transpose": False}))
    return rules


# HF's activation names for lmlab's, and the other HF names of the same functions.
ACTIVATIONS = {"gelu": "gelu", "gelu_tanh": "gelu_pytorch_tanh", "relu": "relu", "silu": "silu"}
_SYNONYMS = {"gelu_new": "gelu_tanh", "gelu_fast": "gelu_tanh", "swish": "silu"}


class Mapping:
    """One HF architecture: its `model_type`, the lmlab options its `layout` fixes, and the functions below."""

    model_type = ""
    name = ""
    layout: dict[str, Any] = {}

    def refusals(self, cfg: ModelConfig) -> list[str]:
        """Why `cfg` has no exact counterpart in this architecture, one reason per option (empty: it maps)."""
        return differ(cfg, self.layout, self.name)

    def hf_config(self, cfg: ModelConfig) -> dict[str, Any]:
        """The HF config's fields for `cfg` (without the token ids, which the export adds)."""
        raise NotImplementedError

    def model_config(self, hf: dict[str, Any]) -> ModelConfig:
        """lmlab's config for an HF config.json (as a dict); refuses a field with no counterpart, naming it."""
        raise NotImplementedError

    def rules(self, cfg: ModelConfig) -> list[Rule]:
        """Every backbone tensor's rule, names relative to lmlab's Backbone and HF's base model."""
        raise NotImplementedError

    def activation(self, hf_name: str, field_name: str) -> str:
        """lmlab's activation for HF's name `hf_name` (config field `field_name`)."""
        ours = {theirs: name for name, theirs in ACTIVATIONS.items()} | _SYNONYMS
        if hf_name not in ours:
            raise InputError(
                f"{self.model_type} config {field_name}={hf_name!r} has no lmlab activation; accepted: {sorted(ours)}"
            )
        return ours[hf_name]

    def to_hf(self, cfg: ModelConfig, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        out: dict[str, torch.Tensor] = {}
        for rule in self.rules(cfg):
            out.update(rule.to_hf(state[rule.ours], cfg))
        return out

    def from_hf(self, cfg: ModelConfig, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        rules = self.rules(cfg)
        missing = [name for rule in rules for name in rule.theirs if name not in state]
        if missing:
            raise InputError(f"the {self.model_type} weights lack {missing[:6]} (of {len(missing)} missing tensors)")
        return {rule.ours: rule.from_hf(state, cfg) for rule in rules}


def require(hf: dict[str, Any], model_type: str, key: str, accepted: Any, default: Any = None) -> None:
    """Refuse an HF config field whose value lmlab cannot reproduce, naming it and what would be accepted."""
    value = hf.get(key, default)
    if value != accepted:
        raise InputError(f"{model_type} config {key}={value!r} has no lmlab counterpart; only {accepted!r} maps")


def differ(cfg: ModelConfig, accepted: dict[str, Any], architecture: str) -> list[str]:
    """One refusal per option of `cfg` whose value is not the one `architecture` has."""
    return [
        f"model.{key}={getattr(cfg, key)!r} ({architecture} has {value!r})"
        for key, value in accepted.items()
        if getattr(cfg, key) != value
    ]
