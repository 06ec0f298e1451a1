"""A fine-tuning run: the starting backbone (a pretraining run's, or fresh), the task's data, Lightning,
tracking with lineage, and the export of the fine-tuned weights and label set."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from torch.utils.data import DataLoader

from lmlab.atomic_file import check_writable_dir
from lmlab.callbacks import ValidateOnLastStep
from lmlab.data.cache import fingerprint
from lmlab.errors import InputError
from lmlab.finetuning.config import FinetuneConfig
from lmlab.finetuning.module import FinetuneModule
from lmlab.runs.config_drift import start_inputs
from lmlab.runs.console import closing_summary
from lmlab.runs.exports import write_export
from lmlab.runs.finished import finished_metrics, record_finished
from lmlab.runs.start import start_stage
from lmlab.runs.starting_point import refuse_unused_architecture, starting_point
from lmlab.runs.tracked import failure_recorded, track_run
from lmlab.runs.trainer import build_trainer, lightning_logger
from lmlab.tasks import TaskFamily, family_class
from lmlab.tasks.sources import load_examples
from lmlab.tracking.identity import redacted

log = logging.getLogger(__name__)


def _collate(features: list[dict[str, np.ndarray]]) -> dict[str, torch.Tensor]:
    batch = {key: torch.from_numpy(np.stack([f[key] for f in features])) for key in features[0]}
    length = batch["input_ids"].shape[1]
    batch["padding_mask"] = torch.arange(length)[None, :] < batch["n_real"][:, None]
    return batch


def _loader(features: list[dict[str, np.ndarray]], batch_size: int, shuffle: bool, seed: int) -> DataLoader:
    return DataLoader(
        features,  # type: ignore[arg-type]
        batch_size=batch_size,
        shuffle=shuffle,
        collate_fn=_collate,
        generator=torch.Generator().manual_seed(seed) if shuffle else None,
    )


def finetune(cfg: DictConfig, run_dir: Path) -> dict[str, float]:
    """Fine-tune as configured, writing the run under `run_dir`; returns the final validation metrics."""
    conf = start_stage(cfg, FinetuneConfig)
    run_dir = Path(run_dir)
    refuse_unused_architecture(conf.pretrained)
    resolved = redacted(OmegaConf.to_container(cfg, resolve=True))
    task = conf.task_config()
    train, validation = load_examples(task, "train"), load_examples(task, "validation")
    start = starting_point(conf.pretrained, conf.model, conf.data, conf.logger.tracking_uri, Path(conf.paths.cache_dir))
    inputs = {
        **start_inputs(start.tokenizer.fingerprint, start.backbone.state_dict()),
        "examples": fingerprint(repr(train), repr(validation)),
    }
    done = finished_metrics(run_dir, resolved, inputs)
    if done is not None:
        log.info("%s already finished with this config on these inputs: its result is reused", run_dir)
        log.info("%s", closing_summary(run_dir, done, None, Path(conf.paths.root)))
        return done
    cls = family_class(task.family)
    labels = cls.label_set(train)
    family: TaskFamily = cls(task, start.tokenizer, labels, start.backbone.cfg)
    log.info(
        "Task %s (%s): %d train / %d validation examples, %d labels; backbone %s (%s)",
        task.name,
        task.family,
        len(train),
        len(validation),
        len(labels),
        start.backbone.cfg.layout,
        start.lineage["lmlab.pretrained_objective"],
    )
    train_features, validation_features = family.features(train), family.features(validation)
    module = FinetuneModule(family, start.backbone, family.metrics(validation), conf.optim, conf.trainer.max_steps)
    main_metric = task.main_metric or cls.main_metric

    check_writable_dir(run_dir / "export", "the export directory")
    tags = {
        "lmlab.kind": "finetune",
        "lmlab.task": task.name,
        "lmlab.task_family": task.family,
        "lmlab.labels": json.dumps(labels),
        "lmlab.main_metric": main_metric,
        "lmlab.tokenizer_fingerprint": start.tokenizer.fingerprint,
        **start.lineage,
    }
    run_name = f"{task.name}-{start.lineage['lmlab.pretrained_objective']}-{run_dir.name}"
    tracked = track_run(conf.logger, Path(conf.paths.root), run_dir, run_name, tags, resolved)
    val_loader = _loader(validation_features, task.batch_size, shuffle=False, seed=conf.seed)
    with failure_recorded(tracked):
        logger = lightning_logger(conf.logger, run_dir, tracked)
        trainer = build_trainer(conf.trainer, run_dir, logger, [ValidateOnLastStep()])
        trainer.validate(module, val_loader, verbose=False)
        if f"val/{main_metric}" not in trainer.callback_metrics:
            found = sorted(k.removeprefix("val/") for k in trainer.callback_metrics if k.startswith("val/"))
            raise InputError(f"task.main_metric={main_metric!r} is not a metric of {task.family}; it reports {found}")
        trainer.fit(module, _loader(train_features, task.batch_size, True, conf.seed), val_loader)
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/")}

    weights = torch.nn.ModuleDict({"backbone": module.backbone, "head": module.head})
    metadata = {
        "labels": json.dumps(labels),
        "global_step": str(module.global_step),
        "run_id": "" if tracked is None else tracked.run_id,
        **start.lineage,
    }
    texts = {"labels.json": json.dumps(labels), "config.yaml": OmegaConf.to_yaml(resolved)}
    export = write_export(run_dir / "export", weights, start.backbone.cfg, start.tokenizer, metadata, texts)
    if tracked is not None:
        tracked.client.log_artifacts(tracked.run_id, str(export))
        tracked.finish()
    record_finished(run_dir, resolved, inputs, metrics)
    log.info("%s", closing_summary(run_dir, metrics, tracked, Path(conf.paths.root)))
    return metrics
