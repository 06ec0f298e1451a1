"""Structured-config schema of an objective study (`study.py`): which objectives to pretrain at which budget, which
tasks to fine-tune each on, over how many seeds. The study's own `model`, `data` and `logger` nodes are the ones its
pretraining runs and the from-scratch baseline use (the stages receive them as the overrides the user wrote)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore

from lmlab.config_schema import at_least, choice
from lmlab.data.config import DataConfig
from lmlab.errors import InputError
from lmlab.models import ModelConfig
from lmlab.objectives import available_objectives
from lmlab.runs.config import LoggerConfig, OptimConfig, PathsConfig, register_resolvers

SCRATCH = "none"  # the baseline "objective": fine-tuning from random initialisation
BUDGETS = ("tokens", "flops")
# Settings the stages take from the study's own model/data nodes: a stage list may not set them differently.
_STUDY_LEVEL = re.compile(r"^[+~]*(model|data|logger|paths|experiment|seed|objective|task|pretrained)\b")


@dataclass(frozen=True)
class StudyTask:
    """One downstream task: `name` labels it in the report, `task` is a conf/task option, `settings` its `task.*`
    values (files, columns)."""

    name: str
    task: str
    settings: dict[str, Any]

    def overrides(self) -> list[str]:
        return [f"task={self.task}", *(f"task.{key}={hydra_value(value)}" for key, value in self.settings.items())]


def hydra_value(value: Any) -> str:
    """A value written as a Hydra override reads it back: strings quoted (so paths with `=` or `,` stay one value),
    lists and None in Hydra's syntax."""
    if isinstance(value, list):
        return "[" + ",".join(hydra_value(v) for v in value) + "]"
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, str):
        return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"
    return repr(value)


@dataclass
class StudySettings:
    name: str = "objectives"
    # Pretraining objectives to compare; `none` is the from-scratch baseline (fine-tuned, never pretrained).
    objectives: list[str] = field(default_factory=lambda: ["mlm", "clm", "electra", "span", SCRATCH])
    # Each: {name: <label>, task: <conf/task option>, <task setting>: <value>, ...}
    tasks: list[Any] = field(default_factory=list)
    seeds: int = 3
    # tokens: every objective trains `steps` optimiser steps on the same batches; flops: the reference objective
    # trains `steps` and every other one as many steps as spend the same training FLOPs.
    budget: str = "tokens"
    steps: int = 3000
    reference: str = "mlm"
    # Overrides for every pretraining / fine-tuning job (trainer.*, optim.*, objective.*), as on a command line.
    pretrain: list[str] = field(default_factory=list)
    finetune: list[str] = field(default_factory=list)

    def validate(self) -> None:
        _check_label("study.name", self.name)
        if not self.objectives:
            raise InputError("study.objectives is empty; e.g. study.objectives=[mlm,clm,none]")
        for name in self.objectives:
            choice("study.objectives", name, (*available_objectives(), SCRATCH))
        if len(set(self.objectives)) != len(self.objectives):
            raise InputError(f"study.objectives lists an objective twice: {self.objectives}")
        choice("study.budget", self.budget, BUDGETS)
        at_least("study.seeds", self.seeds, 1)
        at_least("study.steps", self.steps, 1)
        pretrained = [o for o in self.objectives if o != SCRATCH]
        if self.budget == "flops" and self.reference not in pretrained:
            raise InputError(
                f"study.reference={self.reference!r} must be one of the pretrained objectives {pretrained}: its "
                "study.steps set the FLOPs every objective gets"
            )
        self.task_list()
        for stage in ("pretrain", "finetune"):
            for override in getattr(self, stage):
                if _STUDY_LEVEL.match(override):
                    raise InputError(
                        f"study.{stage} entry {override!r}: the study sets this itself; set model/data/logger at "
                        "the study's top level (they shape the pretraining runs and the scratch baseline alike)"
                    )

    def task_list(self) -> list[StudyTask]:
        if not self.tasks:
            raise InputError(
                "study.tasks is empty; e.g. study.tasks=[{name: trec, task: text_classification, train_file: "
                "train.tsv, validation_file: test.tsv}]"
            )
        tasks = []
        for index, entry in enumerate(self.tasks):
            entry = dict(entry) if isinstance(entry, dict) else entry
            if not isinstance(entry, dict) or not entry.get("name") or not entry.get("task"):
                raise InputError(f"study.tasks[{index}] = {entry!r}: needs name and task (a conf/task option)")
            settings = {k: v for k, v in entry.items() if k not in ("name", "task")}
            _check_label(f"study.tasks[{index}].name", str(entry["name"]))
            if not re.fullmatch(r"[A-Za-z0-9_]+", str(entry["task"])):
                raise InputError(
                    f"study.tasks[{index}].task={entry['task']!r} is not a conf/task option name (letters, digits, '_')"
                )
            tasks.append(StudyTask(str(entry["name"]), str(entry["task"]), settings))
        names = [t.name for t in tasks]
        if len(set(names)) != len(names):
            raise InputError(f"study.tasks names must differ: {names}")
        return tasks


def _check_label(key: str, value: str) -> None:
    """A name that becomes a directory, a run name and a report label."""
    if not re.fullmatch(r"[A-Za-z0-9_.-]+", value) or set(value) == {"."}:
        raise InputError(f"{key}={value!r}: use letters, digits, '_', '-' and '.' (it names directories)")


@dataclass
class StudyConfig:
    study: StudySettings = field(default_factory=StudySettings)
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    paths: PathsConfig = field(default_factory=PathsConfig)
    # Composed with the model option (which sets its learning rate); the stages' optimisers are set in
    # study.pretrain / study.finetune.
    optim: OptimConfig = field(default_factory=OptimConfig)
    # The pretraining runs' seed (fine-tuning runs use seeds 0 .. study.seeds - 1).
    seed: int = 0


def register_study_configs() -> None:
    ConfigStore.instance().store(name="study_schema", node=StudyConfig)
    register_resolvers()
