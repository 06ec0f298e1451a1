"""A meta-learning run: the starting backbone (a pretraining run's, or fresh), episodes from disjoint class pools,
meta-training through Lightning (checkpoints, exact resume, signals, MLflow), then meta-test on the same episodes
for every method, and the export of the meta-trained encoder."""

from __future__ import annotations

import json
import logging
from dataclasses import replace
from pathlib import Path

import torch
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from lmlab.atomic_file import check_writable_dir
from lmlab.callbacks import ValidateOnLastStep
from lmlab.callbacks.preemption import StopOnSignal, StoppedOnSignal
from lmlab.callbacks.rng_state import RngState
from lmlab.errors import InputError
from lmlab.meta.algorithms import algorithm_class
from lmlab.meta.config import MetaConfig, episode_source
from lmlab.meta.episodes import EpisodeDataModule, pool_digest
from lmlab.meta.evaluate import meta_test
from lmlab.meta.module import MetaModule
from lmlab.meta.results import EPISODES_FILE
from lmlab.runs.checkpoints import LAST
from lmlab.runs.config_drift import bind_inputs, check_resume_config, start_inputs
from lmlab.runs.console import closing_summary
from lmlab.runs.entry import lead_process
from lmlab.runs.exports import write_export
from lmlab.runs.resume import checkpoint_callbacks, record_start, record_stop, resume_point
from lmlab.runs.start import start_stage
from lmlab.runs.starting_point import refuse_unused_architecture, starting_point
from lmlab.runs.tracked import failure_recorded, track_run
from lmlab.runs.trainer import build_trainer, lightning_logger
from lmlab.tracking.identity import redacted

log = logging.getLogger(__name__)

POOLS_FILE = "pools.json"
# The meta-val metric the best checkpoint is chosen by, per episode kind (domains: the query loss after adaptation).
SELECTED_BY = {"classes": ("val/acc", "max"), "domains": ("val/loss", "min")}


def metalearn(cfg: DictConfig, run_dir: Path) -> dict[str, float]:
    """Meta-train (unless the algorithm trains nothing) and meta-test as configured; returns the metrics."""
    conf = start_stage(cfg, MetaConfig)
    run_dir = Path(run_dir)
    refuse_unused_architecture(conf.pretrained)
    algo_cfg = conf.algorithm_config()
    cls = algorithm_class(algo_cfg.name)
    if not cls.meta_trains:
        _refuse_unused_training(algo_cfg.name)
    # Everything that can refuse the episodes (pools, class sizes, the learner) runs before the run dir is written.
    start = starting_point(conf.pretrained, conf.model, conf.data, conf.logger.tracking_uri, Path(conf.paths.cache_dir))
    episodes_cfg = conf.episodes_config()
    source = episode_source(episodes_cfg, start.tokenizer)
    data = EpisodeDataModule(source, conf.seed, conf.trainer.max_steps, algo_cfg.tasks_per_step, conf.eval.val_episodes)
    algorithm = cls(algo_cfg, start.backbone, data.pools.train, episodes_cfg.kind)
    ckpt_dir = run_dir / "checkpoints"
    lead = lead_process()
    if lead:
        check_writable_dir(ckpt_dir, "the checkpoint directory")
        check_writable_dir(run_dir / "export", "the export directory")
    resume_from = resume_point(conf.ckpt_path, conf.resume, ckpt_dir) if cls.meta_trains else None
    resolved = redacted(OmegaConf.to_container(cfg, resolve=True))
    changes = check_resume_config(run_dir, resolved, conf.allow_config_change) if resume_from else {}
    inputs = start_inputs(start.tokenizer.fingerprint, start.backbone.state_dict())
    resuming = resume_from is not None
    changes.update(bind_inputs(run_dir, inputs, resuming=resuming, allowed=conf.allow_config_change, lead=lead))

    pools = {"train": data.pools.train, "val": data.pools.val, "test": data.pools.test, "dropped": data.pools.dropped}
    log.info("Episodes %s: %s", episodes_cfg.name, source.describe())
    resume_tags = record_start(run_dir, resolved, resume_from, changes) if lead else None
    tags = {
        "lmlab.kind": "meta",
        "lmlab.meta": algo_cfg.name,
        "lmlab.episodes": episodes_cfg.name,
        "lmlab.episode_kind": episodes_cfg.kind,
        "lmlab.pools": pool_digest(data.pools),
        "lmlab.tokenizer_fingerprint": start.tokenizer.fingerprint,
        **start.lineage,
    }
    run_name = f"{algo_cfg.name}-{episodes_cfg.name}-{run_dir.name}"
    tracked = (
        track_run(conf.logger, Path(conf.paths.root), run_dir, run_name, tags, resolved, resume_tags) if lead else None
    )
    if lead:
        (run_dir / POOLS_FILE).write_text(json.dumps(pools, indent=1))
        if tracked is not None:
            tracked.client.log_artifact(tracked.run_id, str(run_dir / POOLS_FILE))

    module = MetaModule(algorithm, conf.optim, conf.trainer.max_steps, conf.trainer.gradient_clip_val, conf.eval.steps)
    with failure_recorded(tracked):
        if cls.meta_trains:
            stop = StopOnSignal(ckpt_dir / LAST)
            best, last = checkpoint_callbacks(ckpt_dir, *SELECTED_BY[episodes_cfg.kind])
            # Clipping happens in the module: Lightning clips only under automatic optimisation.
            trainer = build_trainer(
                replace(conf.trainer, gradient_clip_val=0.0),
                run_dir,
                lightning_logger(conf.logger, run_dir, tracked),
                [best, last, ValidateOnLastStep(), stop, RngState()],
            )
            try:
                trainer.fit(
                    module,
                    datamodule=data,
                    ckpt_path=None if resume_from is None else resume_from[0],
                    weights_only=True,
                )
            except StoppedOnSignal as stopped:
                record_stop(tracked, stop, stopped)
                return {k: float(v) for k, v in trainer.callback_metrics.items()}
        result = meta_test(
            algorithm,
            data.episodes("val", conf.eval.val_episodes),
            data.episodes("test", conf.eval.test_episodes),
            conf.eval,
        )
    metrics = result.metrics()
    if not lead:
        return metrics
    result.write_episodes(run_dir / EPISODES_FILE, data.episodes("test", conf.eval.test_episodes))
    weights = torch.nn.ModuleDict({"backbone": algorithm.backbone})
    metadata = {
        # A meta-trained language model is a causal LM like any other: evaluate.py and generate.py read it as one.
        "objective": json.dumps({"name": "clm" if episodes_cfg.kind == "domains" else algo_cfg.name}),
        "meta": algo_cfg.name,
        "global_step": str(module.global_step),
        "run_id": "" if tracked is None else tracked.run_id,
        **start.lineage,
    }
    export = write_export(
        run_dir / "export",
        weights,
        algorithm.backbone.cfg,
        start.tokenizer,
        metadata,
        {"config.yaml": OmegaConf.to_yaml(resolved), POOLS_FILE: json.dumps(pools, indent=1)},
    )
    if tracked is not None:
        for key, value in metrics.items():
            tracked.client.log_metric(tracked.run_id, key, value, step=module.global_step)
        tracked.client.log_artifact(tracked.run_id, str(run_dir / EPISODES_FILE))
        tracked.client.log_artifacts(tracked.run_id, str(export))
        if result.inner_lr is not None:
            tracked.client.set_tag(tracked.run_id, "lmlab.meta_test_inner_lr", f"{result.inner_lr:g}")
        tracked.finish()
    log.info("%s", closing_summary(run_dir, metrics, tracked, Path(conf.paths.root), module.global_step))
    return metrics


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
