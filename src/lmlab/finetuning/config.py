"""Structured-config schema of a fine-tuning run (`finetune.py`), registered with Hydra's ConfigStore. The `task`
node is checked against its family's own config (`lmlab.tasks.<family>.Config`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore

from lmlab.errors import InputError
from lmlab.runs.config import ResumeConfig, StageConfig, register_resolvers
from lmlab.tasks import TaskConfig, available_families, family_class


@dataclass
class FinetuneConfig(StageConfig, ResumeConfig):
    # A task family's config (conf/task/*.yaml): validated against that family's schema.
    task: Any = field(default_factory=dict)
    experiment: str = "finetune"

    def task_config(self) -> Any:
        """The `task` node as its family's typed config (it already is one when a task YAML composed it in)."""
        if isinstance(self.task, TaskConfig):
            return self.task
        family = self.task.get("family") if isinstance(self.task, dict) else None
        if not family:
            raise InputError("task.family is missing; choose a task, e.g. task=synthetic_topic")
        return family_class(family).parse_config(self.task)

    def validate(self) -> None:
        super().validate()
        task = self.task_config()
        if self.pretrained.lower() == "none" and task.max_length > self.model.max_positions:
            raise InputError(
                f"task.max_length={task.max_length} exceeds model.max_positions={self.model.max_positions}; "
                "lower task.max_length or raise model.max_positions"
            )


def register_finetune_configs() -> None:
    """The run's schema, and each family's config as `task_schema/<family>`, which every conf/task/*.yaml builds on
    (so a task key is typed and checked at composition, and any setting can be overridden without `+`)."""
    store = ConfigStore.instance()
    store.store(name="finetune_schema", node=FinetuneConfig)
    for family in available_families():
        store.store(group="task_schema", name=family, node=family_class(family).Config)
    register_resolvers()
