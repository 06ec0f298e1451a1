"""A meta-learning run: the starting backbone (a pretraining run's, or fresh), episodes from disjoint class pools,
meta-training through Lightning (checkpoints, exact resume, signals, MLflow), then meta-test on the same episodes
for every method, and the export of the meta-trained encoder."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytorch_lightning as pl
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from lmlab.errors import InputError
from lmlab.meta.algorithms import algorithm_class
from lmlab.meta.config import MetaConfig, episode_source
from lmlab.meta.episodes import EpisodeDataModule, pool_digest
from lmlab.meta.evaluate import meta_test
from lmlab.meta.module import MetaModule
from lmlab.meta.results import EPISODES_FILE
from lmlab.runs.config_drift import start_inputs
from lmlab.runs.driver import Export, Stage, run_stage
from lmlab.runs.starting_point import refuse_unused_architecture, starting_point
from lmlab.tracking.mlflow_run import MlflowRun

log = logging.getLogger(__name__)

POOLS_FILE = "pools.json"
# The meta-val metric the best checkpoint is chosen by, per episode kind (domains: the query loss after adaptation).
SELECTED_BY = {"classes": ("val/acc", "max"), "domains": ("val/loss", "min")}


def metalearn(cfg: DictConfig, run_dir: Path) -> dict[str, float]:
    """Meta-train (unless the algorithm trains nothing) and meta-test as configured; returns the metrics."""
    return run_stage(cfg, run_dir, MetaLearning)


class MetaLearning(Stage[MetaConfig]):
    """Episodes from disjoint class pools (or text domains), meta-training, meta-test of every method on the same
    episodes; exported as the meta-trained encoder (or causal LM)."""

    schema = MetaConfig
    module: MetaModule
    clips_itself = True

    def setup(self) -> None:
        conf = self.conf
        refuse_unused_architecture(conf.pretrained)
        self.algo_cfg = conf.algorithm_config()
        self.cls = algorithm_class(self.algo_cfg.name)
        if not self.cls.meta_trains:
            _refuse_unused_training(self.algo_cfg.name)
        cache = Path(conf.paths.cache_dir)
        start = self.start = starting_point(conf.pretrained, conf.model, conf.data, conf.logger.tracking_uri, cache)
        self.episodes_cfg = conf.episodes_config()
        source = episode_source(self.episodes_cfg, start.tokenizer)
        self.data = EpisodeDataModule(
            source, conf.seed, conf.trainer.max_steps, self.algo_cfg.tasks_per_step, conf.eval.val_episodes
        )
        self.algorithm = self.cls(self.algo_cfg, start.backbone, self.data.pools.train, self.episodes_cfg.kind)
        self.inputs = start_inputs(start.tokenizer.fingerprint, start.backbone.state_dict())
        pools = self.data.pools
        self.pools = {"train": pools.train, "val": pools.val, "test": pools.test, "dropped": pools.dropped}
        log.info("Episodes %s: %s", self.episodes_cfg.name, source.describe())
        t = conf.trainer
        self.module = MetaModule(self.algorithm, conf.optim, t.max_steps, t.gradient_clip_val, conf.eval.steps)

    @property
    def trains(self) -> bool:
        return self.cls.meta_trains

    def tags(self) -> dict[str, str]:
        return {
            "lmlab.kind": "meta",
            "lmlab.meta": self.algo_cfg.name,
            "lmlab.episodes": self.episodes_cfg.name,
            "lmlab.episode_kind": self.episodes_cfg.kind,
            "lmlab.pools": pool_digest(self.data.pools),
            "lmlab.tokenizer_fingerprint": self.start.tokenizer.fingerprint,
            **self.start.lineage,
        }

    def run_name(self) -> str:
        return f"{self.algo_cfg.name}-{self.episodes_cfg.name}-{self.run_dir.name}"

    @property
    def monitor(self) -> tuple[str, str]:
        return SELECTED_BY[self.episodes_cfg.kind]

    def started(self, tracked: MlflowRun | None, *, resumed: bool) -> None:
        (self.run_dir / POOLS_FILE).write_text(json.dumps(self.pools, indent=1))
        if tracked is not None:
            tracked.client.log_artifact(tracked.run_id, str(self.run_dir / POOLS_FILE))

    def fit(self, trainer: pl.Trainer, ckpt_path: Path | None) -> None:
        trainer.fit(self.module, datamodule=self.data, ckpt_path=ckpt_path, weights_only=True)

    def results(self, trainer: pl.Trainer | None, best: Path | None) -> dict[str, float]:
        eval_cfg = self.conf.eval
        val, test = self.data.episodes("val", eval_cfg.val_episodes), self.data.episodes("test", eval_cfg.test_episodes)
        self.result = meta_test(self.algorithm, val, test, eval_cfg)
        return self.result.metrics()

    def export(self) -> Export:
        name = self.algo_cfg.name
        metadata = {
            # A meta-trained language model is a causal LM like any other: evaluate.py and generate.py read it as one.
            "objective": json.dumps({"name": "clm" if self.episodes_cfg.kind == "domains" else name}),
            "meta": name,
            **self.start.lineage,
        }
        weights = torch.nn.ModuleDict({"backbone": self.algorithm.backbone})
        texts = {POOLS_FILE: json.dumps(self.pools, indent=1)}
        return Export(weights, self.algorithm.backbone.cfg, self.start.tokenizer, metadata, texts)

    def after_export(self, export_dir: Path, tracked: MlflowRun | None) -> dict[str, float]:
        test = self.data.episodes("test", self.conf.eval.test_episodes)
        self.result.write_episodes(self.run_dir / EPISODES_FILE, test)
        if tracked is not None:
            tracked.client.log_artifact(tracked.run_id, str(self.run_dir / EPISODES_FILE))
            if self.result.inner_lr is not None:
                tracked.client.set_tag(tracked.run_id, "lmlab.meta_test_inner_lr", f"{self.result.inner_lr:g}")
        return {}


def _refuse_unused_training(name: str) -> None:
    """An algorithm that trains nothing before meta-test: a trainer-steps or optimiser override of a single run would
    be ignored. In a sweep (`-m meta=maml,finetune trainer.max_steps=500`) they are meant for the methods that train."""
    if not HydraConfig.initialized() or HydraConfig.get().mode == RunMode.MULTIRUN:
        return
    ignored = [
        o
        for o in HydraConfig.get().overrides.task
        if o.lstrip("+~").split("=")[0].split(".")[0] == "optim" or o.lstrip("+~").startswith("trainer.max_steps=")
    ]
    if ignored:
        raise InputError(
            f"{ignored} would be ignored: meta={name} does no meta-training (it only adapts at meta-test, with eval.*)"
        )
