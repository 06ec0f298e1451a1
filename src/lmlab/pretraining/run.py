"""A pretraining run from a composed config: data, objective, model, tracking, Lightning, export."""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf
from torch import nn

from lmlab.atomic_file import check_writable_dir
from lmlab.callbacks import MetricHistory, ValidateOnLastStep, token_throughput
from lmlab.callbacks.nonfinite import StopOnNonFiniteLoss
from lmlab.callbacks.preemption import StopOnSignal, StoppedOnSignal
from lmlab.callbacks.rng_state import RngState
from lmlab.data.datamodule import PretrainDataModule
from lmlab.data.tokenizer import TrainedTokenizer
from lmlab.errors import InputError
from lmlab.models import ModelConfig
from lmlab.objectives import build_objective, objective_class
from lmlab.pretraining.config import TrainConfig
from lmlab.pretraining.examples import describe_examples
from lmlab.pretraining.module import PretrainModule
from lmlab.runs.checkpoints import LAST
from lmlab.runs.config_drift import bind_inputs, check_resume_config
from lmlab.runs.console import closing_summary
from lmlab.runs.entry import lead_process
from lmlab.runs.exports import ExportedRun, load_checked, strip_prefix, write_export
from lmlab.runs.resume import checkpoint_callbacks, record_start, record_stop, resume_point
from lmlab.runs.sharding import Sharding
from lmlab.runs.start import start_stage
from lmlab.runs.starting_point import check_tokenizer_path, load_run, refuse_unused_architecture
from lmlab.runs.tracked import failure_recorded, track_run
from lmlab.runs.trainer import build_trainer, lightning_logger
from lmlab.tracking.identity import redacted
from lmlab.tracking.loss_curve import plot_loss_curve
from lmlab.tracking.mlflow_run import MlflowRun

log = logging.getLogger(__name__)


def pretrain(cfg: DictConfig, run_dir: Path) -> dict[str, float]:
    """Train as configured, writing checkpoints and exports under `run_dir`; returns the final metrics."""
    conf = start_stage(cfg, TrainConfig)
    refuse_unused_architecture(conf.init, "init", ("model",))
    run_dir = Path(run_dir)
    ckpt_dir = run_dir / "checkpoints"
    # Rank 0 records, tracks and exports; the other DDP ranks (their own processes) only train.
    lead = lead_process()
    if lead:
        check_writable_dir(ckpt_dir, "the checkpoint directory")
    start = resume_point(conf.ckpt_path, conf.resume, ckpt_dir)
    resuming = start is not None
    resolved = redacted(OmegaConf.to_container(cfg, resolve=True))
    changes = check_resume_config(run_dir, resolved, conf.allow_config_change) if resuming else {}

    data, tokenizer, module, lineage = build_pretraining(conf)
    objective = module.objective
    inputs = {"data_fingerprint": data.corpus_fingerprint, "tokenizer_fingerprint": tokenizer.fingerprint}
    changes.update(bind_inputs(run_dir, inputs, resuming=resuming, allowed=conf.allow_config_change, lead=lead))
    resume_tags = record_start(run_dir, resolved, start, changes) if lead else None
    tags = {
        "lmlab.objective": conf.objective["name"],
        "lmlab.n_params": str(sum(p.numel() for p in module.parameters())),
        "lmlab.data_fingerprint": data.corpus_fingerprint,
        "lmlab.tokenizer_fingerprint": tokenizer.fingerprint,
        **lineage,
    }
    run_name = f"{conf.objective['name']}-{run_dir.name}"
    tracked = (
        track_run(conf.logger, Path(conf.paths.root), run_dir, run_name, tags, resolved, resume_tags) if lead else None
    )
    if lead:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "examples.txt").write_text(describe_examples(objective, data.blocks("train"), tokenizer, conf.seed))
    if tracked is not None and not tracked.resumed:
        tracked.client.log_artifact(tracked.run_id, str(run_dir / "examples.txt"))
    history = MetricHistory(conf.trainer.log_every_n_steps)
    stop = StopOnSignal(ckpt_dir / LAST)
    best, last = checkpoint_callbacks(ckpt_dir, "val/loss", "min")
    with failure_recorded(tracked):
        try:
            trainer = build_trainer(
                conf.trainer,
                run_dir,
                lightning_logger(conf.logger, run_dir, tracked),
                [
                    StopOnNonFiniteLoss(),
                    best,
                    last,
                    history,
                    token_throughput(),
                    ValidateOnLastStep(),
                    stop,
                    RngState(),
                ],
                find_unused_parameters=objective.leaves_parameters_unused,
            )
            if not resuming:
                # Validate the untrained model first, so every curve (and every "start -> end" figure) begins at step 0.
                trainer.validate(module, datamodule=data, verbose=False)
            trainer.fit(module, datamodule=data, ckpt_path=None if start is None else start[0], weights_only=True)
        except StoppedOnSignal as stopped:
            record_stop(tracked, stop, stopped)
            return {k: float(v) for k, v in trainer.callback_metrics.items()}

    metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
    weights = module.exported_weights()
    if not lead:
        return metrics
    _export(conf, run_dir, module, weights, tokenizer, resolved, history, tracked)
    if tracked is not None:
        if best.best_model_path:
            tracked.client.set_tag(tracked.run_id, "lmlab.best_checkpoint", best.best_model_path)
        tracked.finish()
    log.info("%s", closing_summary(run_dir, metrics, tracked, Path(conf.paths.root), trainer.global_step))
    return metrics


def build_pretraining(
    conf: TrainConfig,
) -> tuple[PretrainDataModule, TrainedTokenizer, PretrainModule, dict[str, str]]:
    """The data (tokenizer trained or loaded, corpus cached), the module of objective + backbone, and the lineage
    tags of the run it starts from (`init`: the weights, architecture and tokenizer of an lmlab run or an HF model)."""
    cache = Path(conf.paths.cache_dir)
    data_cfg, start = conf.data, None
    lineage: dict[str, str] = {}
    if conf.init.lower() != "none":
        start, lineage = load_run(conf.init, conf.logger.tracking_uri, cache)
        check_tokenizer_path(conf.data, start, "init", conf.init)
        data_cfg = replace(conf.data, tokenizer=replace(conf.data.tokenizer, path=str(start.tokenizer.path)))
    data = PretrainDataModule(data_cfg, cache, conf.seed)
    tokenizer = data.prepare()
    objective = build_objective(conf.objective, tokenizer)
    data.set_transform(objective.transform)
    model_cfg = replace(conf.model, vocab_size=tokenizer.vocab_size) if start is None else start.model_cfg
    if start is not None:
        _check_fits(conf, model_cfg)
    t = conf.trainer
    sharding = Sharding(t.fsdp, t.num_nodes, lead=lead_process()) if t.strategy == "fsdp" else None
    module = PretrainModule(objective, model_cfg, conf.optim, t.max_steps, t.compile, sharding)
    if start is not None and (sharding is None or not sharding.builds_on_meta):
        _start_from(module, start, conf)
    n_params = sum(p.numel() for p in module.parameters())
    log.info("Model: %s, %.2fM parameters; objective %s", model_cfg.layout, n_params / 1e6, conf.objective["name"])
    return data, tokenizer, module, lineage


def _check_fits(conf: TrainConfig, model_cfg: ModelConfig) -> None:
    """The objective and the data must fit the architecture `init` brings."""
    name = conf.objective["name"]
    needed = objective_class(name).required_layout(conf.objective)
    if model_cfg.layout != needed:
        raise InputError(
            f"objective={name} needs model.layout={needed}, but init={conf.init} is a {model_cfg.layout}; "
            "choose an objective for that layout"
        )
    if conf.data.block_size > model_cfg.max_positions:
        raise InputError(
            f"data.block_size={conf.data.block_size} exceeds the max_positions={model_cfg.max_positions} of "
            f"init={conf.init}; lower data.block_size"
        )


def _start_from(module: PretrainModule, start: ExportedRun, conf: TrainConfig) -> None:
    """Load the starting run's backbone, and its head when it was trained on the same objective (else the
    objective's head starts fresh)."""
    source = f"init={conf.init}"
    load_checked(module.backbone, strip_prefix(start.weights, "backbone."), source)
    head = strip_prefix(start.weights, "head.")
    if start.objective_name == conf.objective["name"] and head:
        load_checked(module.head, head, source)
        log.info("Starting from %s: backbone and %s head", conf.init, start.objective_name)
    else:
        log.info(
            "Starting from %s (%s): backbone only; the %s head starts fresh",
            conf.init,
            start.objective_name,
            conf.objective["name"],
        )


def _export(
    conf: TrainConfig,
    run_dir: Path,
    module: PretrainModule,
    weights: nn.Module,
    tokenizer: TrainedTokenizer,
    resolved: dict[str, Any],
    history: MetricHistory,
    tracked: MlflowRun | None,
) -> Path:
    """Weights, tokenizer, config and loss curve into run_dir/export (and the run's artifacts)."""
    metadata = {
        "objective": json.dumps(asdict(module.objective.cfg)),
        "global_step": str(module.global_step),
        "run_id": "" if tracked is None else tracked.run_id,
    }
    texts = {"config.yaml": OmegaConf.to_yaml(resolved)}
    export_dir = write_export(run_dir / "export", weights, module.backbone.cfg, tokenizer, metadata, texts)
    title = f"{conf.experiment}: {conf.objective['name']} / {run_dir.name}"
    plot_loss_curve(history.history, export_dir / "loss_curve.png", title)
    if tracked is not None:
        tracked.client.log_artifacts(tracked.run_id, str(export_dir))
    return export_dir
