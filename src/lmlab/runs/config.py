"""The config nodes every stage shares (trainer, optim, logger, paths; a run's fields, and those of a stage that
starts from a backbone; resume), the job-dir name and Hydra resolvers.

Each config group's YAML merges into its typed node; `lmlab.config_schema.parse` refuses unknown keys and runs every
node's `validate()`.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from typing import Any

import torch
from omegaconf import OmegaConf

from lmlab.config_schema import at_least, choice, require_file
from lmlab.data.config import DataConfig
from lmlab.errors import InputError
from lmlab.models.config import ModelConfig
from lmlab.runs.slurm import gpus_per_node

SCHEDULES = ("linear", "cosine", "constant")
ACCELERATORS = ("cpu", "gpu", "cuda", "mps", "auto")
PRECISIONS = ("32-true", "32", "64-true", "64", "16-mixed", "16", "bf16-mixed", "bf16", "16-true", "bf16-true")
LOGGERS = ("mlflow", "csv", "none")
STRATEGIES = ("auto", "ddp", "fsdp")
FSDP_PRECISIONS = ("32-true", "32", "bf16-mixed", "bf16", "bf16-true", "16-true")
SHARDINGS = ("full", "hybrid", "grad_op")


@dataclass
class FSDPConfig:
    """trainer.strategy=fsdp: FSDP2 under Lightning's ModelParallelStrategy, one unit per Transformer block
    (`lmlab.runs.sharding`). Pretraining runs only."""

    # full: parameters, gradients and optimizer state sharded over every rank; hybrid: sharded within a node,
    # replicated across nodes; grad_op: gradients and optimizer state sharded, parameters kept whole.
    sharding: str = "full"
    # Recompute each block's activations in the backward pass: less memory for about a third more compute.
    activation_checkpointing: bool = False

    def validate(self) -> None:
        choice("trainer.fsdp.sharding", self.sharding, SHARDINGS)


@dataclass
class TrainerConfig:
    """Arguments for `pytorch_lightning.Trainer` (plus `compile`)."""

    accelerator: str = "cpu"
    devices: Any = 1
    # auto: one process, or DDP over several devices; ddp; fsdp (pretraining only; GPUs over NCCL, or CPUs over gloo).
    strategy: str = "auto"
    num_nodes: int = 1
    fsdp: FSDPConfig = field(default_factory=FSDPConfig)
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

    def validate(self) -> None:
        choice("trainer.accelerator", self.accelerator, ACCELERATORS)
        choice("trainer.precision", str(self.precision), PRECISIONS)
        if self.accelerator in ("gpu", "cuda") and not torch.cuda.is_available():
            raise InputError(
                f"trainer.accelerator={self.accelerator} but this machine has no CUDA GPU (torch "
                f"{torch.__version__}); use trainer=cpu (or trainer.accelerator=cpu)"
            )
        choice("trainer.strategy", self.strategy, STRATEGIES)
        if self.strategy == "fsdp" and str(self.precision) not in FSDP_PRECISIONS:
            raise InputError(
                f"trainer.strategy=fsdp does not train in trainer.precision={self.precision} (Lightning's "
                f"ModelParallelStrategy refuses it); choose one of {', '.join(FSDP_PRECISIONS)}"
            )
        for key in ("max_steps", "val_check_interval", "log_every_n_steps", "accumulate_grad_batches", "num_nodes"):
            at_least(f"trainer.{key}", getattr(self, key), 1)
        at_least("trainer.gradient_clip_val", self.gradient_clip_val, 0)
        at_least("trainer.num_sanity_val_steps", self.num_sanity_val_steps, 0)
        limit = self.limit_val_batches
        if (
            isinstance(limit, bool)
            or not isinstance(limit, int | float)
            or limit <= 0
            or (isinstance(limit, float) and limit > 1)
        ):
            raise InputError(
                f"trainer.limit_val_batches={limit!r}: expected a fraction in (0, 1] or a whole number of batches >= 1"
            )


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

    def validate(self) -> None:
        if not self.lr > 0:
            raise InputError(f"optim.lr must be > 0, got {self.lr}")
        if not self.eps > 0:
            raise InputError(f"optim.eps must be > 0, got {self.eps}")
        at_least("optim.weight_decay", self.weight_decay, 0)
        at_least("optim.warmup_steps", self.warmup_steps, 0)
        if len(self.betas) != 2 or not all(0 <= b < 1 for b in self.betas):
            raise InputError(f"optim.betas must be two numbers in [0, 1), got {list(self.betas)}")
        choice("optim.schedule", self.schedule, SCHEDULES)
        if not 0 <= self.min_lr_ratio <= 1:
            raise InputError(f"optim.min_lr_ratio must be in [0, 1], got {self.min_lr_ratio}")


@dataclass
class LoggerConfig:
    kind: str = "mlflow"
    tracking_uri: str = ""
    experiment: str = "lmlab"
    # Where a new MLflow experiment stores artifacts (never the ./mlruns default).
    artifact_location: str = ""
    # The MLflow run this one belongs to (a study's, which sets it): recorded as the run's mlflow.parentRunId.
    parent_run_id: str = ""
    # Extra tags on the run, each recorded as lmlab.<key> (a study marks its runs with them).
    tags: dict[str, str] = field(default_factory=dict)

    def validate(self) -> None:
        choice("logger.kind", self.kind, LOGGERS)
        if self.kind == "mlflow" and not self.tracking_uri:
            raise InputError("logger.kind=mlflow needs logger.tracking_uri (e.g. sqlite:///<path>/mlflow.db)")


@dataclass
class ResumeConfig:
    """The top-level resume settings of every stage that checkpoints (a stage's config subclasses it)."""

    # Rerunning a job continues it from its newest complete checkpoint; resume=false starts afresh (earlier
    # checkpoints move to checkpoints.N). ckpt_path= resumes from a given checkpoint instead.
    resume: bool = True
    ckpt_path: str | None = None
    allow_config_change: bool = False  # let a resume continue with a config that differs from the run's

    def validate(self) -> None:
        if self.ckpt_path is not None:
            require_file(self.ckpt_path, "ckpt_path")


@dataclass
class PathsConfig:
    root: str = "."
    output_dir: str = "outputs"
    cache_dir: str = ".cache"


@dataclass
class RunConfig:
    """What every training stage's config holds: the data, how it trains, where it logs. A stage adds its own nodes
    (model, objective, task, meta, ...) and sets `experiment`."""

    data: DataConfig = field(default_factory=DataConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    paths: PathsConfig = field(default_factory=PathsConfig)
    experiment: str = "???"
    seed: int = 0


@dataclass
class StageConfig(RunConfig):
    """A stage that starts from a backbone (fine-tuning, meta-learning): `model` and `data` are used only with
    pretrained=none (a fresh backbone of `model`, with the tokenizer of `data`)."""

    # An MLflow run id, a pretraining (or fine-tuning) run's output or export directory, or "none".
    pretrained: str = "none"
    model: ModelConfig = field(default_factory=ModelConfig)


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
