"""The launcher configs compose with the trainer they launch (no cluster needed)."""

from __future__ import annotations

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from lmlab.runs.slurm import gpus_per_node

from .conftest import CONF


def _launcher(*overrides: str) -> dict:
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("config", overrides=list(overrides), return_hydra_config=True)
    return OmegaConf.to_container(cfg.hydra.launcher, resolve=True)


def test_the_slurm_launcher_sizes_jobs_from_the_trainer_and_requeues_time_limits(project):
    cpu = _launcher("hydra/launcher=slurm")
    assert cpu["_target_"].endswith("SlurmLauncher")
    assert cpu["tasks_per_node"] == 1 and cpu["gpus_per_node"] == 0
    assert cpu["max_num_timeout"] > 0 and cpu["signal_delay_s"] >= 60
    assert cpu["submitit_folder"].endswith("/.submitit/%j")
    gpu = _launcher("hydra/launcher=slurm", "trainer=gpu", "trainer.devices=4")
    assert gpu["tasks_per_node"] == 4 and gpu["gpus_per_node"] == 4 and gpu["nodes"] == 1
    nodes = _launcher("hydra/launcher=slurm", "trainer=gpu", "trainer.devices=8", "trainer.num_nodes=4")
    assert (nodes["nodes"], nodes["tasks_per_node"], nodes["gpus_per_node"]) == (4, 8, 8)
    assert _launcher("hydra/launcher=local")["_target_"].endswith("LocalLauncher")


def test_a_device_count_that_cannot_size_a_job_is_named():
    assert gpus_per_node("cpu", "auto") == 0
    with pytest.raises(ValueError, match="trainer.devices='auto' cannot size a Slurm job"):
        gpus_per_node("gpu", "auto")


def test_inside_a_slurm_job_lightning_takes_its_ranks_from_slurm_but_never_requeues(monkeypatch):
    from lmlab.runs.slurm import cluster_plugins

    for name in ("SLURM_NTASKS", "SLURM_JOB_NAME"):
        monkeypatch.delenv(name, raising=False)
    assert cluster_plugins() == []
    monkeypatch.setenv("SLURM_NTASKS", "2")
    monkeypatch.setenv("SLURM_NTASKS_PER_NODE", "2")
    monkeypatch.setenv("SLURM_JOB_NAME", "train")
    [environment] = cluster_plugins()
    assert environment.auto_requeue is False
