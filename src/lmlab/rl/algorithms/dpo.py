"""DPO (Rafailov et al., 2023) from (prompt, chosen, rejected) pairs: the implicit reward of a completion is
beta x (log policy - log reference) of it; the loss is -log sigmoid(chosen's - rejected's), ln 2 where the policy is
the reference. `rl.loss=ipo` (Azar et al., 2023) regresses the difference to 1 / (2 beta) instead, which does not
push it without bound."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from lmlab.config_schema import choice
from lmlab.rl.algorithms.base import PreferenceAlgorithm, PreferenceConfig


@dataclass
class DPOConfig(PreferenceConfig):
    name: str = "dpo"
    loss: str = "sigmoid"  # sigmoid (DPO) | ipo

    def validate(self) -> None:
        super().validate()
        choice("rl.loss", self.loss, ("sigmoid", "ipo"))


class DPO(PreferenceAlgorithm):
    Config = DPOConfig

    def loss(self, chosen: torch.Tensor, rejected: torch.Tensor) -> torch.Tensor:
        margin = chosen - rejected
        if self.cfg.loss == "ipo":
            return ((margin / self.cfg.beta - 1 / (2 * self.cfg.beta)) ** 2).mean()
        return -F.logsigmoid(margin).mean()


ALGORITHM = DPO
