"""Fine-tune a pretraining run on a downstream task: `python finetune.py task=synthetic_topic pretrained=<run>`."""

import os
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from lmlab.finetuning.config import register_finetune_configs
from lmlab.finetuning.run import finetune

os.environ.setdefault("LMLAB_ROOT", str(Path(__file__).resolve().parent))
register_finetune_configs()


@hydra.main(version_base="1.3", config_path="conf", config_name="finetune")
def main(cfg: DictConfig) -> float:
    metrics = finetune(cfg, Path(HydraConfig.get().runtime.output_dir))
    return metrics.get("val/loss", float("nan"))


if __name__ == "__main__":
    main()
