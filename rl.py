"""RL fine-tuning of a decoder run against a reward: `python rl.py rl=grpo policy=<run> reward=facts`."""

import os
from pathlib import Path

import hydra
from omegaconf import DictConfig

from lmlab.rl.config import RLConfig, register_rl_configs
from lmlab.rl.run import rl
from lmlab.runs.entry import run_job
from lmlab.runs.hydra_guard import guard_compositions

os.environ.setdefault("LMLAB_ROOT", str(Path(__file__).resolve().parent))
register_rl_configs()
guard_compositions("rl", RLConfig)


@hydra.main(version_base="1.3", config_path="conf", config_name="rl")
def main(cfg: DictConfig) -> float:
    metrics = run_job(cfg, rl)
    return metrics.get("val/reward", float("nan"))


if __name__ == "__main__":
    main()
