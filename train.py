"""Pretrain a language model: `python train.py model=base objective=mlm` (see `--help`)."""

import os
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from lmlab.training.config import register_configs
from lmlab.training.run import pretrain

os.environ.setdefault("LMLAB_ROOT", str(Path(__file__).resolve().parent))
register_configs()


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig) -> float:
    metrics = pretrain(cfg, Path(HydraConfig.get().runtime.output_dir))
    return metrics.get("val/loss", float("nan"))


if __name__ == "__main__":
    main()
