"""First-order MAML: the query loss's gradient at the adapted weights is applied to the starting weights (no second
derivatives, so it runs on any attention kernel and under DDP)."""

from __future__ import annotations

from dataclasses import dataclass

from lmlab.meta.algorithms.maml import MAML, MAMLConfig


@dataclass
class FOMAMLConfig(MAMLConfig):
    name: str = "fomaml"
    first_order: bool = True


class FOMAML(MAML):
    Config = FOMAMLConfig


ALGORITHM = FOMAML
