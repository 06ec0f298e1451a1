"""Shared fixtures: a tiny tokenizer, composed configs and run directories inside tmp_path."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

from lmlab.data.config import DataConfig
from lmlab.data.datamodule import PretrainDataModule
from lmlab.data.tokenizer import TrainedTokenizer
from lmlab.pretraining.config import register_configs

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"

# A model and corpus small enough that a run takes seconds on a CPU.
TINY = [
    "model.n_layers=2",
    "model.d_model=32",
    "model.n_heads=2",
    "model.d_ff=64",
    "data.world.train_documents=300",
    "data.world.validation_documents=40",
    "data.tokenizer.vocab_size=700",
    "data.block_size=32",
    "data.batch_size=16",
    "trainer.max_steps=20",
    "trainer.val_check_interval=10",
    "trainer.limit_val_batches=4",
    "trainer.log_every_n_steps=2",
    "trainer.enable_progress_bar=false",
    "optim.warmup_steps=5",
]

register_configs()

if "PYTEST_XDIST_WORKER_COUNT" in os.environ:
    # Workers share the cores (`make test-all` runs one per core), so each takes its share of threads, it and the
    # runs it starts; the tiny models of the tests run no faster on more.
    _threads = max(1, (os.cpu_count() or 1) // int(os.environ["PYTEST_XDIST_WORKER_COUNT"]))
    os.environ["OMP_NUM_THREADS"] = str(_threads)
    torch.set_num_threads(_threads)


def entry_points() -> dict[str, tuple[str, type]]:
    """script -> (its primary config in conf/, its schema), each schema registered as the script registers it."""
    from hydra.core.config_store import ConfigStore

    from lmlab.finetuning.config import FinetuneConfig, register_finetune_configs
    from lmlab.generation import GenerateConfig
    from lmlab.meta.config import MetaConfig, register_meta_configs
    from lmlab.pretraining.config import TrainConfig
    from lmlab.pretraining.evaluate import EvaluateConfig, register_evaluate_configs
    from lmlab.publishing.run import ExportConfig
    from lmlab.rl.config import RLConfig, register_rl_configs
    from lmlab.studies.config import StudyConfig, register_study_configs

    register_finetune_configs()
    register_evaluate_configs()
    register_study_configs()
    register_meta_configs()
    register_rl_configs()
    ConfigStore.instance().store(name="generate_schema", node=GenerateConfig)
    ConfigStore.instance().store(name="export_schema", node=ExportConfig)
    return {
        "train.py": ("config", TrainConfig),
        "finetune.py": ("finetune", FinetuneConfig),
        "evaluate.py": ("evaluate", EvaluateConfig),
        "generate.py": ("generate", GenerateConfig),
        "study.py": ("study", StudyConfig),
        "metalearn.py": ("metalearn", MetaConfig),
        "rl.py": ("rl", RLConfig),
        "export.py": ("export", ExportConfig),
    }


def compose_checked(script: str, overrides: list[str]) -> None:
    """Compose `script`'s config with `overrides` (hydra node included) and run the checks the entry point runs at
    composition (lmlab.runs.hydra_guard.check_composed); raises what the entry point would refuse with."""
    from lmlab.runs.hydra_guard import check_composed

    config_name, schema = entry_points()[script]
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name, overrides=overrides, return_hydra_config=True)
    check_composed(cfg, schema)


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A project root in tmp_path: outputs, caches and mlflow.db land there."""
    monkeypatch.setenv("LMLAB_ROOT", str(tmp_path))
    _link_experiments(tmp_path)
    return tmp_path


def _link_experiments(root: Path) -> None:
    """Experiment presets are found under <project root>/experiments (Hydra's search path)."""
    if not (root / "experiments").exists():
        (root / "experiments").symlink_to(ROOT / "experiments")


@pytest.fixture
def compose_config(project: Path) -> Callable[..., DictConfig]:
    def _compose(*overrides: str) -> DictConfig:
        with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
            return compose("config", overrides=list(overrides))

    return _compose


@pytest.fixture(scope="session")
def synthetic_data(tmp_path_factory: pytest.TempPathFactory) -> PretrainDataModule:
    """A prepared synthetic-world data module with a small tokenizer (shared, read-only)."""
    cfg = DataConfig()
    cfg.world.train_documents = 200
    cfg.world.validation_documents = 20
    cfg.tokenizer.vocab_size = 600
    cfg.block_size = 64
    cfg.tokenize.shard_documents = 64  # 4 shards: every objective reads across shard ends
    data = PretrainDataModule(cfg, tmp_path_factory.mktemp("cache"), seed=0)
    data.prepare()
    return data


@pytest.fixture(scope="session")
def tokenizer(synthetic_data: PretrainDataModule) -> TrainedTokenizer:
    assert synthetic_data.tokenizer is not None
    return synthetic_data.tokenizer


def sigterm_after_first_checkpoint(cmd: list[str], root: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    """Run `cmd` (a train.py command writing under `root`) and SIGTERM it (rank 0 only: the launcher's parent
    process) once its first best-step checkpoint exists; the finished process, with its stderr."""
    job = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and job.poll() is None:
        if list((root / "outputs").glob("default/*/checkpoints/best-step*.ckpt")):
            break
        time.sleep(0.05)
    assert job.poll() is None, "the run ended before it could be interrupted"
    job.send_signal(signal.SIGTERM)
    _, stderr = job.communicate(timeout=180)
    return subprocess.CompletedProcess(cmd, job.returncode, "", stderr)


def signal_after_checkpoint(
    cmd: list[str], root: Path, env: dict[str, str], *, signum: int, stage_dir: str, from_step: int
) -> tuple[subprocess.CompletedProcess, Path]:
    """Run `cmd` (an entry point writing under `root`/outputs/`stage_dir`) and send it `signum` once it has saved a
    best-step checkpoint at step `from_step` or later; the finished process (with its stderr) and the job's
    last.ckpt path."""
    job = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline, last = time.monotonic() + 300, None
    while time.monotonic() < deadline and job.poll() is None:
        found = list((root / "outputs").glob(f"{stage_dir}/*/checkpoints/best-step*.ckpt"))
        if found and int(found[0].stem.removeprefix("best-step")) >= from_step:
            last = found[0].parent / "last.ckpt"
            break
        time.sleep(0.1)
    assert last is not None and job.poll() is None, "the run ended before it could be interrupted"
    job.send_signal(signum)
    _, stderr = job.communicate(timeout=120)
    return subprocess.CompletedProcess(cmd, job.returncode, "", stderr), last


def run_env(root: Path) -> dict[str, str]:
    """Environment for running train.py in a subprocess against a project root in tmp."""
    _link_experiments(root)
    return {**os.environ, "LMLAB_ROOT": str(root), "PYTHONUNBUFFERED": "1"}


# The longest test files, started first: each runs whole on one worker (`--dist loadfile`), and the others fill in.
FIRST = ("tests/test_documented_commands_run.py", "tests/test_documented_examples_run.py")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    items.sort(key=lambda item: item.nodeid.split("::")[0] not in FIRST)


@pytest.fixture
def stop_at(monkeypatch: pytest.MonkeyPatch) -> Callable[[int], None]:
    """Make a stage receive SIGTERM's flag after the given optimiser step (the rest of the path is the real one)."""
    from lmlab.callbacks.preemption import StopOnSignal
    from lmlab.runs import driver

    def install(step: int) -> None:
        class StopAt(StopOnSignal):
            def on_train_batch_end(self, trainer, *args):  # type: ignore[no-untyped-def]
                if trainer.global_step == step:
                    self.received = [signal.SIGTERM]
                super().on_train_batch_end(trainer, *args)

        monkeypatch.setattr(driver, "StopOnSignal", StopAt)

    return install
