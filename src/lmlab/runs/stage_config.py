"""What every stage does first with its composed config, before it reads data or records anything."""

from __future__ import annotations

from typing import Any, TypeVar

import pytorch_lightning as pl
from omegaconf import DictConfig, OmegaConf

from lmlab.config_schema import parse
from lmlab.errors import InputError
from lmlab.runs.targets import check_targets
from lmlab.tracking.mlflow_run import check_store

T = TypeVar("T")


def start_stage(cfg: DictConfig, schema: type[T]) -> T:
    """`cfg` as the stage's typed config (targets allowlisted, every key known, every value valid), its tracking
    store usable, and the run seeded."""
    check_targets(OmegaConf.to_container(cfg, resolve=False))
    conf: Any = parse(cfg, schema)
    trainer = getattr(conf, "trainer", None)
    if trainer is not None and trainer.strategy == "fsdp" and not getattr(schema, "SHARDS", False):
        raise InputError(
            f"trainer.strategy=fsdp shards pretraining runs (train.py) only; this stage ({schema.__name__}) trains "
            "with trainer.strategy=auto or ddp"
        )
    if conf.logger.kind == "mlflow":
        check_store(conf.logger.tracking_uri)
    pl.seed_everything(conf.seed, workers=True)
    return conf
