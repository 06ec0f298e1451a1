"""Structured-config schema of a meta-learning run (`metalearn.py`), registered with Hydra's ConfigStore. The
`meta` node is checked against its algorithm's own config (`lmlab.meta.algorithms.<name>`), the `episodes` node
against its kind's (class episodes: `EpisodeConfig`; text domains: `DomainConfig`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore

from lmlab.config_schema import at_least, parse_node
from lmlab.data.tokenizer import TrainedTokenizer
from lmlab.errors import InputError
from lmlab.meta.algorithms import algorithm_class, available_algorithms
from lmlab.meta.domains import DomainConfig, DomainEpisodes
from lmlab.meta.episodes import ClassEpisodes, EpisodeConfig, EpisodeSource
from lmlab.runs.config import ResumeConfig, StageConfig, register_resolvers


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
class MetaConfig(StageConfig, ResumeConfig):
    # A meta-learning algorithm's config (conf/meta/*.yaml): validated against that algorithm's schema.
    meta: Any = field(default_factory=dict)
    # Class episodes (conf/episodes: synthetic_topic, files, cloze) or text domains (people, text_files).
    episodes: Any = field(default_factory=dict)
    eval: MetaTestConfig = field(default_factory=MetaTestConfig)
    experiment: str = "meta"

    def algorithm_config(self) -> Any:
        name = self.meta.get("name") if isinstance(self.meta, dict) else getattr(self.meta, "name", None)
        if not name:
            raise InputError("meta.name is missing; choose an algorithm, e.g. meta=maml")
        return algorithm_class(name).parse_config(self.meta)

    def episodes_config(self) -> EpisodeConfig | DomainConfig:
        node = self.episodes
        kind = node.get("kind", "classes") if isinstance(node, dict) else getattr(node, "kind", "classes")
        if kind not in EPISODE_KINDS:
            raise InputError(f"episodes.kind={kind!r} is not an episode kind; available: {sorted(EPISODE_KINDS)}")
        return parse_node(node, EPISODE_KINDS[kind], "episodes.")

    def validate(self) -> None:
        super().validate()
        self.algorithm_config()
        episodes = self.episodes_config()
        if self.trainer.accumulate_grad_batches != 1:
            raise InputError(
                f"trainer.accumulate_grad_batches={self.trainer.accumulate_grad_batches}: a meta-learning step already "
                "averages meta.tasks_per_step episodes; raise that instead"
            )
        if self.pretrained.lower() == "none" and episodes.max_length > self.model.max_positions:
            raise InputError(
                f"episodes.max_length={episodes.max_length} exceeds model.max_positions="
                f"{self.model.max_positions}; lower episodes.max_length or raise model.max_positions"
            )


EPISODE_KINDS: dict[str, type[EpisodeConfig] | type[DomainConfig]] = {
    "classes": EpisodeConfig,
    "domains": DomainConfig,
}


def episode_source(cfg: EpisodeConfig | DomainConfig, tokenizer: TrainedTokenizer) -> EpisodeSource:
    if isinstance(cfg, DomainConfig):
        return DomainEpisodes(cfg, tokenizer)
    return ClassEpisodes(cfg, tokenizer)


def register_meta_configs() -> None:
    """The run's schema, each algorithm's config as `meta_schema/<name>` (which every conf/meta/*.yaml builds on) and
    each episode kind's as `episodes_schema/<kind>` (conf/episodes/*.yaml)."""
    store = ConfigStore.instance()
    store.store(name="metalearn_schema", node=MetaConfig)
    for name in available_algorithms():
        store.store(group="meta_schema", name=name, node=algorithm_class(name).Config)
    for kind, schema in EPISODE_KINDS.items():
        store.store(group="episodes_schema", name=kind, node=schema)
    register_resolvers()
