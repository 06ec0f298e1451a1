"""A pretraining run from a composed config: data, objective, model, tracking, Lightning, export."""

from __future__ import annotations

import json
import logging
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from lightning_fabric.utilities.rank_zero import rank_zero_only
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.callbacks import ModelCheckpoint

from lmlab.atomic_file import check_writable_dir
from lmlab.callbacks import MetricHistory, ValidateOnLastStep, token_throughput
from lmlab.callbacks.nonfinite import StopOnNonFiniteLoss
from lmlab.callbacks.preemption import StopOnSignal, StoppedOnSignal, signal_name
from lmlab.callbacks.rng_state import RngState
from lmlab.config_schema import parse
from lmlab.data.datamodule import PretrainDataModule
from lmlab.objectives import build_objective
from lmlab.tracking.identity import flatten, job_tags, redacted
from lmlab.tracking.mlflow_run import MlflowRun, check_store, open_run
from lmlab.training.checkpoints import LAST, checkpoint_step, latest_checkpoint
from lmlab.training.config import TrainConfig
from lmlab.training.config_drift import check_resume_config, record_config
from lmlab.training.examples import describe_examples
from lmlab.training.export import export_run
from lmlab.training.module import PretrainModule
from lmlab.training.targets import check_targets
from lmlab.training.trainer import build_trainer, lightning_logger

log = logging.getLogger(__name__)


def pretrain(cfg: DictConfig, run_dir: Path) -> dict[str, float]:
    """Train as configured, writing checkpoints and exports under `run_dir`; returns the final metrics."""
    check_targets(OmegaConf.to_container(cfg, resolve=False))
    conf = parse(cfg, TrainConfig)
    if conf.logger.kind == "mlflow":
        check_store(conf.logger.tracking_uri)
    pl.seed_everything(conf.seed, workers=True)
    run_dir = Path(run_dir)
    ckpt_dir = run_dir / "checkpoints"
    # Rank 0 records, tracks and exports; the other DDP ranks (their own processes) only train.
    lead = rank_zero_only.rank == 0
    if lead:
        check_writable_dir(ckpt_dir, "the checkpoint directory")
    start = _resume_point(conf, ckpt_dir)
    resuming = start is not None
    resolved = redacted(OmegaConf.to_container(cfg, resolve=True))
    changes = check_resume_config(run_dir, resolved, conf.allow_config_change) if resuming else {}

    data = PretrainDataModule(conf.data, Path(conf.paths.cache_dir), conf.seed)
    tokenizer = data.prepare()
    objective = build_objective(conf.objective, tokenizer)
    data.set_transform(objective.transform)
    model_cfg = replace(conf.model, vocab_size=tokenizer.vocab_size)
    module = PretrainModule(
        objective, model_cfg, conf.optim, conf.trainer.max_steps, compile_backbone=conf.trainer.compile
    )
    n_params = sum(p.numel() for p in module.parameters())
    log.info("Model: %s, %.2fM parameters; objective %s", conf.model.layout, n_params / 1e6, conf.objective["name"])

    fingerprints = {
        "data_fingerprint": data.corpus_fingerprint,
        "tokenizer_fingerprint": tokenizer.fingerprint,
    }
    resume_tags = None
    if start is not None:
        log.info("Resuming %s from %s (step %d)", run_dir, start[0], start[1])
        resume_tags = {"lmlab.resumed_from_step": str(start[1]), "lmlab.resumed_from": start[0].name}
        if changes:
            resume_tags["lmlab.resume_config_changes"] = json.dumps(changes)
            if lead:
                record_config(run_dir, resolved)  # later resumes compare against the settings it continues with
    elif lead:
        _archive_previous_checkpoints(ckpt_dir)
        record_config(run_dir, resolved)
    tracked = _open_tracking(conf, run_dir, resolved, fingerprints, n_params, resume_tags) if lead else None
    if lead:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "examples.txt").write_text(describe_examples(objective, data.blocks("train"), tokenizer, conf.seed))
    if tracked is not None and not tracked.resumed:
        tracked.client.log_artifact(tracked.run_id, str(run_dir / "examples.txt"))
    history = MetricHistory()
    stop = StopOnSignal(ckpt_dir / LAST)
    checkpoints = ModelCheckpoint(
        dirpath=ckpt_dir,
        filename="best-step{step}",
        auto_insert_metric_name=False,
        monitor="val/loss",
        mode="min",
        save_top_k=1,
        save_last=True,
        # A resumed run owns the files already in its dir: overwrite last.ckpt rather than write last-v1.ckpt.
        enable_version_counter=False,
    )
    try:
        trainer = build_trainer(
            conf.trainer,
            run_dir,
            lightning_logger(conf.logger, run_dir, tracked),
            [StopOnNonFiniteLoss(), checkpoints, history, token_throughput(), ValidateOnLastStep(), stop, RngState()],
        )
        if not resuming:
            # Validate the untrained model first, so every curve (and every "start -> end" figure) begins at step 0.
            trainer.validate(module, datamodule=data, verbose=False)
        trainer.fit(module, datamodule=data, ckpt_path=None if start is None else start[0], weights_only=True)
    except StoppedOnSignal as stopped:
        if tracked is not None:
            tracked.client.set_tag(tracked.run_id, "lmlab.stopped_at_step", str(stopped.step))
            tracked.client.set_tag(tracked.run_id, "lmlab.stopped_by", "+".join(map(signal_name, stopped.signals)))
            tracked.end("KILLED")
        log.warning("%s; rerun the same command to continue", stopped)
        stop.hand_over(stopped)
        return {k: float(v) for k, v in trainer.callback_metrics.items()}
    except Exception as err:
        if tracked is not None:
            tracked.fail(f"{type(err).__name__}: {err}")
        raise

    metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
    if not lead:
        return metrics
    export_dir = export_run(
        module,
        tokenizer,
        OmegaConf.to_yaml(resolved),
        history.history,
        run_dir / "export",
        title=f"{conf.experiment}: {conf.objective['name']} / {run_dir.name}",
        run_id=None if tracked is None else tracked.run_id,
    )
    if tracked is not None:
        tracked.client.log_artifacts(tracked.run_id, str(export_dir))
        best = checkpoints.best_model_path
        if best:
            tracked.client.set_tag(tracked.run_id, "lmlab.best_checkpoint", best)
        tracked.finish()
    log.info(
        "Done at step %d: %s; exported to %s",
        trainer.global_step,
        ", ".join(f"{k}={v:.4g}" for k, v in sorted(metrics.items()) if k.startswith("val/")),
        export_dir,
    )
    return metrics


def _open_tracking(
    conf: TrainConfig,
    run_dir: Path,
    resolved: dict[str, Any],
    fingerprints: dict[str, str],
    n_params: int,
    resume_tags: dict[str, str] | None,
) -> MlflowRun | None:
    if conf.logger.kind != "mlflow":
        return None
    tags = {
        **job_tags(Path(conf.paths.root), run_dir),
        "lmlab.objective": conf.objective["name"],
        "lmlab.n_params": str(n_params),
        **{f"lmlab.{k}": v for k, v in fingerprints.items()},
    }
    return open_run(
        tracking_uri=conf.logger.tracking_uri,
        experiment=conf.logger.experiment,
        artifact_location=conf.logger.artifact_location,
        run_dir=run_dir,
        run_name=f"{conf.objective['name']}-{run_dir.name}",
        tags=tags,
        params=flatten(resolved),
        resume=resume_tags is not None,
        resume_tags=resume_tags,
    )


def _resume_point(conf: TrainConfig, ckpt_dir: Path) -> tuple[Path, int] | None:
    """The checkpoint to continue from: `ckpt_path` when given, else (resume=true) the run dir's newest complete
    checkpoint, else none."""
    if conf.ckpt_path is not None:
        path = Path(conf.ckpt_path)
        return path, checkpoint_step(path)
    return latest_checkpoint(ckpt_dir) if conf.resume else None


def _archive_previous_checkpoints(ckpt_dir: Path) -> None:
    """A fresh run never overwrites an earlier run's checkpoints: they move to checkpoints.N."""
    if not ckpt_dir.is_dir() or not any(ckpt_dir.iterdir()):
        return
    n = 1
    while ckpt_dir.with_name(f"{ckpt_dir.name}.{n}").exists():
        n += 1
    ckpt_dir.rename(ckpt_dir.with_name(f"{ckpt_dir.name}.{n}"))
    log.info("Moved the previous run's checkpoints to %s", ckpt_dir.with_name(f"{ckpt_dir.name}.{n}"))
