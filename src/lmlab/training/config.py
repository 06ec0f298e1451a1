"""Structured-config schema of a pretraining run, registered with Hydra's ConfigStore.

Each config group's YAML merges into its typed node here, so a misspelt key or a wrong type fails
at composition time. Checks that span groups live in `check_compatible`.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import OmegaConf

from lmlab.data.config import DataConfig
from lmlab.models import ModelConfig
from lmlab.objectives import objective_class
from lmlab.training.slurm import gpus_per_node

SCHEDULES = ("linear", "cosine", "constant")
LOGGERS = ("mlflow", "csv", "none")


@dataclass
class TrainerConfig:
    """Arguments for `pytorch_lightning.Trainer` (plus `compile`)."""

    accelerator: str = "cpu"
    devices: Any = 1
    precision: str = "32-true"
    max_steps: int = 1000
    val_check_interval: int = 100
    limit_val_batches: Any = 1.0
    log_every_n_steps: int = 10
    gradient_clip_val: float = 1.0
    accumulate_grad_batches: int = 1
    num_sanity_val_steps: int = 0
    enable_progress_bar: bool = True
    deterministic: bool = False
    # torch.compile the backbone; checkpoints and exported weights keep the uncompiled names.
    compile: bool = False


@dataclass
class OptimConfig:
    """AdamW with linear warmup then `schedule` decay to `min_lr_ratio * lr` at trainer.max_steps."""

    lr: float = 1e-3
    weight_decay: float = 0.01
    betas: list[float] = field(default_factory=lambda: [0.9, 0.98])
    eps: float = 1e-6
    warmup_steps: int = 100
    schedule: str = "linear"
    min_lr_ratio: float = 0.0


@dataclass
class LoggerConfig:
    kind: str = "mlflow"
    tracking_uri: str = ""
    experiment: str = "lmlab"
    # Where a new MLflow experiment stores artifacts (never the ./mlruns default).
    artifact_location: str = ""


@dataclass
class PathsConfig:
    root: str = "."
    output_dir: str = "outputs"
    cache_dir: str = ".cache"


@dataclass
class TrainConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    # Validated against the chosen objective's own schema when the objective is built.
    objective: Any = field(default_factory=dict)
    data: DataConfig = field(default_factory=DataConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    paths: PathsConfig = field(default_factory=PathsConfig)
    experiment: str = "default"
    seed: int = 0
    # Rerunning a job continues it from its newest complete checkpoint; resume=false starts afresh (earlier
    # checkpoints move to checkpoints.N). ckpt_path= resumes from a given checkpoint instead.
    resume: bool = True
    ckpt_path: str | None = None
    allow_config_change: bool = False  # let a resume continue with a config that differs from the run's


def check_compatible(cfg: TrainConfig) -> None:
    """Checks across config groups, run before any data is prepared; each error names both settings."""
    cfg.model.validate()
    cfg.data.validate()
    name = cfg.objective.get("name") if isinstance(cfg.objective, dict) else None
    if not name:
        raise ValueError("objective.name is missing; choose an objective, e.g. objective=mlm")
    needed = objective_class(name).required_layout(cfg.objective)
    if cfg.model.layout != needed:
        raise ValueError(
            f"objective={name} needs model.layout={needed}; model.layout={cfg.model.layout} given. "
            f"Set model.layout={needed} or choose another objective."
        )
    if cfg.data.block_size > cfg.model.max_positions:
        raise ValueError(
            f"data.block_size={cfg.data.block_size} exceeds model.max_positions={cfg.model.max_positions}; "
            "lower data.block_size or raise model.max_positions"
        )
    if cfg.optim.schedule not in SCHEDULES:
        raise ValueError(f"optim.schedule={cfg.optim.schedule!r} is not supported; expected one of {list(SCHEDULES)}")
    if cfg.logger.kind not in LOGGERS:
        raise ValueError(f"logger.kind={cfg.logger.kind!r} is not supported; expected one of {list(LOGGERS)}")
    if cfg.trainer.max_steps < 1:
        raise ValueError(f"trainer.max_steps must be >= 1, got {cfg.trainer.max_steps}")


def job_dirname(override_dirname: str) -> str:
    """A directory name from a job's overrides: deterministic, filesystem-safe and bounded in length."""
    if not override_dirname:
        return "defaults"
    safe = re.sub(r"[^A-Za-z0-9=,._+-]+", "_", override_dirname)
    if len(safe) <= 120:
        return safe
    return f"{safe[:100]}-{hashlib.sha256(override_dirname.encode()).hexdigest()[:12]}"


def register_resolvers() -> None:
    if not OmegaConf.has_resolver("lmlab_dirname"):
        OmegaConf.register_new_resolver("lmlab_dirname", job_dirname)
    if not OmegaConf.has_resolver("lmlab_slurm_gpus"):
        OmegaConf.register_new_resolver("lmlab_slurm_gpus", gpus_per_node)


def register_configs() -> None:
    ConfigStore.instance().store(name="train_schema", node=TrainConfig)
    register_resolvers()
