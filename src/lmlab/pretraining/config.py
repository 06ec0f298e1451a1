"""Structured-config schema of a pretraining run (`train.py`), registered with Hydra's ConfigStore. Checks that
span groups live in `TrainConfig.validate`."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

from hydra.core.config_store import ConfigStore

from lmlab.errors import InputError
from lmlab.models import ModelConfig
from lmlab.objectives import objective_class
from lmlab.runs.config import ResumeConfig, RunConfig, register_resolvers


@dataclass
class TrainConfig(RunConfig, ResumeConfig):
    SHARDS: ClassVar[bool] = True  # trainer.strategy=fsdp is for this stage (`lmlab.runs.stage_config`)

    model: ModelConfig = field(default_factory=ModelConfig)
    # Validated against the chosen objective's own schema when the objective is built.
    objective: Any = field(default_factory=dict)
    experiment: str = "default"
    # Start from a run's weights instead of a fresh model: an lmlab run (export or run dir, MLflow run id) or
    # hf:<save_pretrained directory or hub name>. Its architecture and tokenizer come with it.
    init: str = "none"

    def validate(self) -> None:
        """Checks across config groups (each part has validated itself); each error names both settings."""
        super().validate()
        name = self.objective.get("name") if isinstance(self.objective, dict) else None
        if not name:
            raise InputError("objective.name is missing; choose an objective, e.g. objective=mlm")
        cls = objective_class(name)
        cls.parse_config(self.objective)
        needed = cls.required_layout(self.objective)
        if self.model.layout != needed:
            raise InputError(
                f"objective={name} needs model.layout={needed}; model.layout={self.model.layout} given. "
                f"Set model.layout={needed} or choose another objective."
            )
        if self.data.block_size > self.model.max_positions:
            raise InputError(
                f"data.block_size={self.data.block_size} exceeds model.max_positions={self.model.max_positions}; "
                "lower data.block_size or raise model.max_positions"
            )


def register_configs() -> None:
    ConfigStore.instance().store(name="train_schema", node=TrainConfig)
    register_resolvers()
