"""Structured-config schema of a meta-learning run (`metalearn.py`), registered with Hydra's ConfigStore. The
`meta` node is checked against its algorithm's own config (`lmlab.meta.algorithms.<name>`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore

from lmlab.config_schema import at_least
from lmlab.data.config import DataConfig
from lmlab.errors import InputError
from lmlab.meta.algorithms import algorithm_class, available_algorithms
from lmlab.meta.episodes import EpisodeConfig
from lmlab.models import ModelConfig
from lmlab.runs.config import (
    LoggerConfig,
    OptimConfig,
    PathsConfig,
    ResumeConfig,
    TrainerConfig,
    register_resolvers,
)


@dataclass
class MetaTestConfig:
    """The adaptation budget every method gets at meta-test, and the episodes it is measured on."""

    steps: int = 5
    # The inner learning rates tried on the meta-val episodes (with each method's own meta.inner_lr); the best is
    # used on meta-test (and recorded).
    inner_lrs: list[float] = field(default_factory=lambda: [0.03, 0.1, 0.3, 1.0])
    val_episodes: int = 100
    test_episodes: int = 600

    def validate(self) -> None:
        at_least("eval.steps", self.steps, 0)
        at_least("eval.val_episodes", self.val_episodes, 1)
        at_least("eval.test_episodes", self.test_episodes, 1)
        if not self.inner_lrs or any(lr <= 0 for lr in self.inner_lrs):
            raise InputError(f"eval.inner_lrs must be a non-empty list of learning rates > 0, got {self.inner_lrs}")


@dataclass
class MetaConfig(ResumeConfig):
    # An MLflow run id, a pretraining (or fine-tuning) run's output or export directory, or "none".
    pretrained: str = "none"
    # A meta-learning algorithm's config (conf/meta/*.yaml): validated against that algorithm's schema.
    meta: Any = field(default_factory=dict)
    episodes: EpisodeConfig = field(default_factory=EpisodeConfig)
    eval: MetaTestConfig = field(default_factory=MetaTestConfig)
    # Used only with pretrained=none: the architecture and the data whose tokenizer to use.
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    paths: PathsConfig = field(default_factory=PathsConfig)
    experiment: str = "meta"
    seed: int = 0

    def algorithm_config(self) -> Any:
        name = self.meta.get("name") if isinstance(self.meta, dict) else getattr(self.meta, "name", None)
        if not name:
            raise InputError("meta.name is missing; choose an algorithm, e.g. meta=maml")
        return algorithm_class(name).parse_config(self.meta)

    def validate(self) -> None:
        super().validate()
        self.algorithm_config()
        if self.trainer.accumulate_grad_batches != 1:
            raise InputError(
                f"trainer.accumulate_grad_batches={self.trainer.accumulate_grad_batches}: a meta-learning step already "
                "averages meta.tasks_per_step episodes; raise that instead"
            )
        if self.pretrained.lower() == "none" and self.episodes.max_length > self.model.max_positions:
            raise InputError(
                f"episodes.max_length={self.episodes.max_length} exceeds model.max_positions="
                f"{self.model.max_positions}; lower episodes.max_length or raise model.max_positions"
            )


def register_meta_configs() -> None:
    """The run's schema, and each algorithm's config as `meta_schema/<name>`, which every conf/meta/*.yaml builds on."""
    store = ConfigStore.instance()
    store.store(name="metalearn_schema", node=MetaConfig)
    for name in available_algorithms():
        store.store(group="meta_schema", name=name, node=algorithm_class(name).Config)
    register_resolvers()
