"""Compare pretraining objectives downstream: `python study.py +study=objectives_synthetic` (see `--help`)."""

import os
from pathlib import Path

import hydra
from omegaconf import DictConfig

from lmlab.pretraining.config import register_configs
from lmlab.runs.entry import run_job
from lmlab.runs.hydra_guard import guard_compositions
from lmlab.studies.config import StudyConfig, register_study_configs
from lmlab.studies.run import study

os.environ.setdefault("LMLAB_ROOT", str(Path(__file__).resolve().parent))
register_configs()  # the study composes its pretraining runs' configs to measure their FLOPs
register_study_configs()
guard_compositions("study", StudyConfig)


@hydra.main(version_base="1.3", config_path="conf", config_name="study")
def main(cfg: DictConfig) -> None:
    run_job(cfg, study)


if __name__ == "__main__":
    main()
