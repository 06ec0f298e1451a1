"""Pretrain a language model: `python train.py model=base objective=mlm` (see `--help`)."""

import os
from pathlib import Path

import hydra
from omegaconf import DictConfig

from lmlab.pretraining.config import TrainConfig, register_configs
from lmlab.pretraining.run import pretrain
from lmlab.runs.entry import run_job
from lmlab.runs.hydra_guard import guard_compositions

os.environ.setdefault("LMLAB_ROOT", str(Path(__file__).resolve().parent))
register_configs()
guard_compositions("config", TrainConfig)


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig) -> float:
    metrics = run_job(cfg, pretrain)
    return metrics.get("val/loss", float("nan"))


if __name__ == "__main__":
    main()
