"""Structured-config schema of an RL run (`rl.py`), registered with Hydra's ConfigStore. The `rl` node is checked
against its algorithm's own config (`lmlab.rl.algorithms.<name>`), `reward` against its reward's."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore

from lmlab.config_schema import at_least, require_file
from lmlab.errors import InputError
from lmlab.rl.algorithms import PreferenceAlgorithm, algorithm_class, available_algorithms
from lmlab.rl.prompts import PromptConfig
from lmlab.rl.rewards import available_rewards, reward_class
from lmlab.runs.config import ResumeConfig, RunConfig, register_resolvers


@dataclass
class RLEvalConfig:
    """Held-out evaluation at every validation: sampled completions of the held-out prompts (the same ones, from the
    same seed, every time), and at the end the policy's LM loss on `data`'s validation text against the reference's."""

    samples: int = 4  # completions per held-out prompt
    seed: int = 1234
    table_rows: int = 16  # prompts whose completions are written to completions/step<N>.jsonl
    lm_batches: int = 20  # validation batches of `data` the final LM loss is measured on

    def validate(self) -> None:
        at_least("eval.samples", self.samples, 1)
        at_least("eval.table_rows", self.table_rows, 0)
        at_least("eval.lm_batches", self.lm_batches, 1)


@dataclass
class RLConfig(RunConfig, ResumeConfig):
    # The policy's starting point: an MLflow run id, a run's output or export directory, or hf:<dir or hub name>
    # (decoder, prefix-LM or encoder-decoder).
    policy: str = "???"
    rl: Any = field(default_factory=dict)
    reward: Any = field(default_factory=dict)
    prompts: PromptConfig = field(default_factory=PromptConfig)
    # rl=dpo: preference pairs (.jsonl: prompt, chosen, rejected), split by prompts.eval_fraction and split_seed
    preferences: str = ""
    eval: RLEvalConfig = field(default_factory=RLEvalConfig)
    experiment: str = "rl"

    def algorithm_config(self) -> Any:
        return algorithm_class(_name(self.rl, "rl", "rl=grpo")).parse_config(self.rl)

    def reward_config(self) -> Any:
        return reward_class(_name(self.reward, "reward", "reward=facts")).parse_config(self.reward)

    def preferences_used(self) -> bool:
        """The algorithm learns from preference pairs (DPO), not from a reward on sampled completions."""
        return issubclass(algorithm_class(self.algorithm_config().name), PreferenceAlgorithm)

    def validate(self) -> None:
        super().validate()
        self.algorithm_config()
        self.reward_config()
        if self.preferences_used():
            if not self.preferences:
                raise InputError(
                    f"rl={self.algorithm_config().name} learns from preference pairs: set preferences=<pairs.jsonl> "
                    '(one {"prompt", "chosen", "rejected"} per line)'
                )
            require_file(self.preferences, "preferences")
        elif self.preferences:
            raise InputError(
                f"preferences={self.preferences} would be ignored: rl={self.algorithm_config().name} samples "
                "completions and scores them with the reward; preference pairs are for rl=dpo"
            )
        if self.trainer.accumulate_grad_batches != 1:
            raise InputError(
                f"trainer.accumulate_grad_batches={self.trainer.accumulate_grad_batches}: an RL step already averages "
                "rl.prompts_per_step x rl.group completions; raise those instead"
            )


def _name(node: Any, key: str, example: str) -> str:
    name = node.get("name") if isinstance(node, dict) else getattr(node, "name", None)
    if not name:
        raise InputError(f"{key}.name is missing; choose one, e.g. {example}")
    return str(name)


def register_rl_configs() -> None:
    """The run's schema, and each algorithm's and reward's config (`rl_schema/<name>`, `reward_schema/<name>`),
    which conf/rl/*.yaml and conf/reward/*.yaml build on."""
    store = ConfigStore.instance()
    store.store(name="rl_run_schema", node=RLConfig)
    for name in available_algorithms():
        store.store(group="rl_schema", name=name, node=algorithm_class(name).Config)
    for name in available_rewards():
        store.store(group="reward_schema", name=name, node=reward_class(name).Config)
    register_resolvers()
