"""Fine-tune a pretraining run on a downstream task: `python finetune.py task=synthetic_topic pretrained=<run>`."""

import os
from pathlib import Path

import hydra
from omegaconf import DictConfig

from lmlab.finetuning.config import FinetuneConfig, register_finetune_configs
from lmlab.finetuning.run import finetune
from lmlab.runs.entry import run_job
from lmlab.runs.hydra_guard import guard_compositions

os.environ.setdefault("LMLAB_ROOT", str(Path(__file__).resolve().parent))
register_finetune_configs()
guard_compositions("finetune", FinetuneConfig)


@hydra.main(version_base="1.3", config_path="conf", config_name="finetune")
def main(cfg: DictConfig) -> float:
    metrics = run_job(cfg, finetune)
    return metrics.get("val/loss", float("nan"))


if __name__ == "__main__":
    main()
