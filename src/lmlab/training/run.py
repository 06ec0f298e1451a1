"""A pretraining run from a composed config: data, objective, model, tracking, Lightning, export."""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.callbacks import ModelCheckpoint

from lmlab.callbacks import MetricHistory, ValidateOnLastStep, token_throughput
from lmlab.data.datamodule import PretrainDataModule
from lmlab.objectives import build_objective
from lmlab.tracking.identity import flatten, job_tags
from lmlab.tracking.mlflow_run import MlflowRun, open_run
from lmlab.training.config import TrainConfig, check_compatible
from lmlab.training.examples import describe_examples
from lmlab.training.export import export_run
from lmlab.training.module import PretrainModule
from lmlab.training.trainer import build_trainer, lightning_logger

log = logging.getLogger(__name__)


def pretrain(cfg: DictConfig, run_dir: Path) -> dict[str, float]:
    """Train as configured, writing checkpoints and exports under `run_dir`; returns the final metrics."""
    conf: TrainConfig = OmegaConf.to_object(cfg)
    check_compatible(conf)
    pl.seed_everything(conf.seed, workers=True)
    run_dir = Path(run_dir)
    resuming = conf.ckpt_path is not None
    if resuming and not Path(conf.ckpt_path).is_file():
        raise FileNotFoundError(f"ckpt_path={conf.ckpt_path} does not exist")

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

    resolved = OmegaConf.to_container(cfg, resolve=True)
    fingerprints = {
        "data_fingerprint": data.corpus_fingerprint,
        "tokenizer_fingerprint": tokenizer.fingerprint,
    }
    tracked = _open_tracking(conf, run_dir, resolved, fingerprints, n_params, resuming)
    examples = describe_examples(objective, data.blocks("train"), tokenizer, conf.seed)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "examples.txt").write_text(examples)
    if tracked is not None and not tracked.resumed:
        tracked.client.log_artifact(tracked.run_id, str(run_dir / "examples.txt"))
    history = MetricHistory()
    checkpoints = ModelCheckpoint(
        dirpath=run_dir / "checkpoints",
        filename="best-step{step}",
        auto_insert_metric_name=False,
        monitor="val/loss",
        mode="min",
        save_top_k=1,
        save_last=True,
    )
    if not resuming:
        _archive_previous_checkpoints(run_dir / "checkpoints")
    trainer = build_trainer(
        conf.trainer,
        run_dir,
        lightning_logger(conf.logger, run_dir, tracked),
        [checkpoints, history, token_throughput(), ValidateOnLastStep()],
    )
    if not resuming:
        # Validate the untrained model first, so every curve (and every "start -> end" figure) begins at step 0.
        trainer.validate(module, datamodule=data, verbose=False)
    trainer.fit(module, datamodule=data, ckpt_path=conf.ckpt_path, weights_only=True)

    metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
    export_dir = export_run(
        module,
        tokenizer,
        OmegaConf.to_yaml(resolved),
        history.history,
        run_dir / "export",
        title=f"{conf.experiment}: {conf.objective['name']} / {run_dir.name}",
        run_id=None if tracked is None else tracked.run_id,
    )
    if tracked is not None and trainer.is_global_zero:
        tracked.client.log_artifacts(tracked.run_id, str(export_dir))
        best = checkpoints.best_model_path
        if best:
            tracked.client.set_tag(tracked.run_id, "lmlab.best_checkpoint", best)
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
    resuming: bool,
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
        resume=resuming,
    )


def _archive_previous_checkpoints(ckpt_dir: Path) -> None:
    """A fresh run never overwrites an earlier run's checkpoints: they move to checkpoints.N."""
    if not ckpt_dir.is_dir() or not any(ckpt_dir.iterdir()):
        return
    n = 1
    while ckpt_dir.with_name(f"{ckpt_dir.name}.{n}").exists():
        n += 1
    ckpt_dir.rename(ckpt_dir.with_name(f"{ckpt_dir.name}.{n}"))
    log.info("Moved the previous run's checkpoints to %s", ckpt_dir.with_name(f"{ckpt_dir.name}.{n}"))
