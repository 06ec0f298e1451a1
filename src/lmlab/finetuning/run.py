"""A fine-tuning run: the starting backbone (a pretraining run's, or fresh), the task's data, Lightning,
tracking with lineage, and the export of the fine-tuned weights and label set."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf
from torch.utils.data import DataLoader

from lmlab.atomic_file import check_writable_dir
from lmlab.callbacks import ValidateOnLastStep
from lmlab.data.cache import file_digest
from lmlab.data.corpus import build_corpus
from lmlab.data.tokenizer import TrainedTokenizer, load_or_train_tokenizer
from lmlab.errors import InputError
from lmlab.finetuning.config import FinetuneConfig
from lmlab.finetuning.module import FinetuneModule
from lmlab.models import Backbone
from lmlab.runs.console import closing_summary
from lmlab.runs.exports import load_export, write_export
from lmlab.runs.start import start_stage
from lmlab.runs.tracked import track_run
from lmlab.runs.trainer import build_trainer, lightning_logger
from lmlab.tasks import TaskFamily, family_class
from lmlab.tasks.sources import load_examples
from lmlab.tracking.identity import redacted

log = logging.getLogger(__name__)


@dataclass
class StartingPoint:
    backbone: Backbone
    tokenizer: TrainedTokenizer
    lineage: dict[str, str]  # MLflow tags linking the fine-tune to its pretraining run


def starting_point(conf: FinetuneConfig) -> StartingPoint:
    """The pretrained run's backbone and tokenizer, or (pretrained=none) a fresh backbone of `conf.model` with the
    tokenizer `conf.data` trains — the same as a pretraining run on that data would use."""
    if conf.pretrained.lower() == "none":
        cache = Path(conf.paths.cache_dir)
        tokenizer = load_or_train_tokenizer(build_corpus(conf.data, cache / "hf"), conf.data.tokenizer, cache)
        backbone = Backbone(replace(conf.model, vocab_size=tokenizer.vocab_size))
        return StartingPoint(backbone, tokenizer, {"lmlab.pretrained": "none", "lmlab.pretrained_objective": "none"})
    exported = load_export(conf.pretrained, conf.logger.tracking_uri, Path(conf.paths.cache_dir))
    if conf.data.tokenizer.path:
        theirs, ours = file_digest(exported.tokenizer.path), file_digest(conf.data.tokenizer.path)
        if theirs != ours:
            raise InputError(
                f"data.tokenizer.path={conf.data.tokenizer.path} (sha256 {ours[:16]}) is not the tokenizer of "
                f"pretrained={conf.pretrained} (sha256 {theirs[:16]}, fingerprint {exported.tokenizer.fingerprint}); "
                "a pretrained backbone only understands its own tokenizer — drop data.tokenizer.path"
            )
    lineage = {
        "lmlab.pretrained": conf.pretrained,
        "lmlab.pretrained_run_id": exported.run_id,
        "lmlab.pretrained_objective": exported.objective_name,
        "lmlab.pretrained_step": str(exported.global_step),
        "lmlab.pretrained_path": str(exported.path),
    }
    return StartingPoint(exported.backbone(), exported.tokenizer, lineage)


def _refuse_unused_architecture(conf: FinetuneConfig) -> None:
    """`model` and `data` describe the backbone and tokenizer of pretrained=none; a pretrained run brings its own, so
    an override of them would be ignored (data.tokenizer.path is checked against the run's tokenizer instead)."""
    if conf.pretrained.lower() == "none" or not HydraConfig.initialized():
        return
    ignored = [
        o
        for o in HydraConfig.get().overrides.task
        if o.lstrip("+~").split("=")[0].split(".")[0] in ("model", "data")
        and not o.lstrip("+").startswith("data.tokenizer.path=")
    ]
    if ignored:
        raise InputError(
            f"{ignored} would be ignored: with pretrained={conf.pretrained} the architecture and tokenizer come "
            "from that run (model and data are for pretrained=none). Drop them, or fine-tune from scratch with "
            "pretrained=none"
        )


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
    _refuse_unused_architecture(conf)
    task = conf.task_config()
    train, validation = load_examples(task, "train"), load_examples(task, "validation")
    start = starting_point(conf)
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

    resolved = redacted(OmegaConf.to_container(cfg, resolve=True))
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
    try:
        logger = lightning_logger(conf.logger, run_dir, tracked)
        trainer = build_trainer(conf.trainer, run_dir, logger, [ValidateOnLastStep()])
        trainer.validate(module, val_loader, verbose=False)
        if f"val/{main_metric}" not in trainer.callback_metrics:
            found = sorted(k.removeprefix("val/") for k in trainer.callback_metrics if k.startswith("val/"))
            raise InputError(f"task.main_metric={main_metric!r} is not a metric of {task.family}; it reports {found}")
        trainer.fit(module, _loader(train_features, task.batch_size, True, conf.seed), val_loader)
    except Exception as err:
        if tracked is not None:
            tracked.fail(f"{type(err).__name__}: {err}")
        raise
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/")}

    weights = torch.nn.ModuleDict({"backbone": module.backbone, "head": module.head})
    metadata = {"labels": json.dumps(labels), **start.lineage}
    texts = {"labels.json": json.dumps(labels), "config.yaml": OmegaConf.to_yaml(resolved)}
    export = write_export(run_dir / "export", weights, start.backbone.cfg, start.tokenizer, metadata, texts)
    if tracked is not None:
        tracked.client.log_artifacts(tracked.run_id, str(export))
        tracked.finish()
    log.info("%s", closing_summary(run_dir, metrics, tracked, Path(conf.paths.root)))
    return metrics
