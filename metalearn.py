"""Meta-learn few-shot adaptation: `python metalearn.py meta=maml episodes=synthetic_topic pretrained=<run>`."""

import os
from pathlib import Path

import hydra
from omegaconf import DictConfig

from lmlab.meta.config import MetaConfig, register_meta_configs
from lmlab.meta.run import metalearn
from lmlab.runs.entry import run_job
from lmlab.runs.hydra_guard import guard_compositions

os.environ.setdefault("LMLAB_ROOT", str(Path(__file__).resolve().parent))
register_meta_configs()
guard_compositions("metalearn", MetaConfig)


@hydra.main(version_base="1.3", config_path="conf", config_name="metalearn")
def main(cfg: DictConfig) -> float:
    metrics = run_job(cfg, metalearn)
    return metrics.get("test/acc", float("nan"))


if __name__ == "__main__":
    main()
