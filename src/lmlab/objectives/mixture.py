"""A weighted mixture of objectives on one backbone: each batch is drawn from one component, chosen from
(seed, epoch, batch number), and each component's loss is logged under its own name."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from omegaconf import OmegaConf
from torch import nn

from lmlab.data.blocks import Block
from lmlab.data.tokenizer import TrainedTokenizer
from lmlab.errors import InputError
from lmlab.models import Backbone, ModelConfig
from lmlab.objectives import build_objective, objective_class
from lmlab.objectives.base import Objective, ObjectiveOutput


def _default_components() -> list[Any]:
    return [{"name": "span", "weight": 0.5}, {"name": "denoise", "weight": 0.5}]


@dataclass
class MixtureConfig:
    name: str = "mixture"
    # Each entry is an objective config (name and its own keys) plus `weight`.
    components: list[Any] = field(default_factory=_default_components)


def _split(component: Any) -> tuple[dict, float]:
    node = OmegaConf.to_container(component) if OmegaConf.is_config(component) else dict(component)
    assert isinstance(node, dict), component
    weight = float(node.pop("weight", 1.0))
    if not node.get("name") or node["name"] == "mixture" or weight <= 0:
        raise InputError(f"objective.components entry {node}: needs a name other than mixture and weight > 0")
    return node, weight


class Mixture(Objective):
    Config = MixtureConfig

    @classmethod
    def required_layout(cls, cfg: Any) -> str:
        nodes = [_split(c)[0] for c in cfg.get("components", _default_components())]
        layouts = {n["name"]: objective_class(n["name"]).required_layout(n) for n in nodes}
        if len(set(layouts.values())) != 1:
            raise InputError(f"a mixture's components must share one backbone layout; got {layouts}")
        return next(iter(layouts.values()))

    def __init__(self, cfg: MixtureConfig, tokenizer: TrainedTokenizer) -> None:
        super().__init__(cfg, tokenizer)
        nodes, weights = zip(*(_split(c) for c in cfg.components), strict=True)
        if not nodes:
            raise InputError("objective.components is empty")
        self.components = [build_objective(node, tokenizer) for node in nodes]
        names = [node["name"] for node in nodes]
        self.labels = [name if names.count(name) == 1 else f"{name}{i}" for i, name in enumerate(names)]
        self.probs = np.asarray(weights) / sum(weights)
        self.loss_is_nll = all(c.loss_is_nll for c in self.components)
        self.leaves_parameters_unused = len(self.components) > 1

    def component_of(self, block: Block) -> int:
        return int(np.random.default_rng([*block.batch_key, 0x4D49]).choice(len(self.probs), p=self.probs))

    def transform(self, block: Block, rng: np.random.Generator) -> dict[str, np.ndarray]:
        index = self.component_of(block)
        example = self.components[index].transform(block, rng)
        example["component"] = np.asarray(index)
        return example

    def build_head(self, model_cfg: ModelConfig) -> nn.Module:
        return nn.ModuleList(c.build_head(model_cfg) for c in self.components)

    def _component(self, batch: dict[str, torch.Tensor]) -> int:
        indices = batch["component"]
        if bool((indices != indices[0]).any()):
            raise InputError("a mixture batch mixes components; batches must come from EpochSampler keys")
        return int(indices[0])

    def forward(self, backbone: Backbone, head: nn.Module, batch: dict[str, torch.Tensor]) -> ObjectiveOutput:
        index = self._component(batch)
        out = self.components[index].forward(backbone, head.get_submodule(str(index)), batch)
        label = self.labels[index]
        parts = {f"{label}_loss": out.loss.detach(), **{f"{label}/{k}": v for k, v in out.parts.items()}}
        return ObjectiveOutput(out.loss, out.n_targets, out.n_correct, parts)

    def flops_per_batch(self, backbone: Backbone, batch: dict[str, torch.Tensor]) -> int:
        return self.components[self._component(batch)].flops_per_batch(backbone, batch)


OBJECTIVE = Mixture
