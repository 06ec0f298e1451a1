"""A fine-tuning run: the starting backbone (a pretraining run's, or fresh), the task's data, Lightning,
tracking with lineage, and the export of the fine-tuned weights and label set."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytorch_lightning as pl
import torch
from omegaconf import DictConfig
from torch.utils.data import DataLoader

from lmlab.data.cache import fingerprint
from lmlab.errors import InputError
from lmlab.finetuning.config import FinetuneConfig
from lmlab.finetuning.module import FinetuneModule
from lmlab.runs.checkpoints import load_checkpoint_weights
from lmlab.runs.config_drift import start_inputs
from lmlab.runs.driver import Export, Stage, run_stage
from lmlab.runs.starting_point import refuse_unused_architecture, starting_point
from lmlab.runs.step_loader import ExampleStream, StepLoader
from lmlab.tasks import TaskFamily, family_class
from lmlab.tasks.sources import load_examples

log = logging.getLogger(__name__)


def _collate(features: list[dict[str, np.ndarray]]) -> dict[str, torch.Tensor]:
    batch = {key: torch.from_numpy(np.stack([f[key] for f in features])) for key in features[0]}
    length = batch["input_ids"].shape[1]
    batch["padding_mask"] = torch.arange(length)[None, :] < batch["n_real"][:, None]
    return batch


def finetune(cfg: DictConfig, run_dir: Path) -> dict[str, float]:
    """Fine-tune as configured, writing the run under `run_dir`; returns the final validation metrics."""
    return run_stage(cfg, run_dir, Finetuning)


class Finetuning(Stage[FinetuneConfig]):
    """A task family's head on a (pretrained) backbone, trained on the task's training split, scored on validation;
    exported with its label set (the weights `task.select` names)."""

    schema = FinetuneConfig
    module: FinetuneModule

    def setup(self) -> None:
        conf = self.conf
        refuse_unused_architecture(conf.pretrained)
        task = self.task = conf.task_config()
        train, validation = load_examples(task, "train"), load_examples(task, "validation")
        cache = Path(conf.paths.cache_dir)
        start = self.start = starting_point(conf.pretrained, conf.model, conf.data, conf.logger.tracking_uri, cache)
        self.inputs = {
            **start_inputs(start.tokenizer.fingerprint, start.backbone.state_dict()),
            "examples": fingerprint(repr(train), repr(validation)),
        }
        cls = family_class(task.family)
        self.labels = cls.label_set(train)
        family: TaskFamily = cls(task, start.tokenizer, self.labels, start.backbone.cfg)
        log.info(
            "Task %s (%s): %d train / %d validation examples, %d labels; backbone %s (%s)",
            task.name,
            task.family,
            len(train),
            len(validation),
            len(self.labels),
            start.backbone.cfg.layout,
            start.lineage["lmlab.pretrained_objective"],
        )
        self.train_features, validation_features = family.features(train), family.features(validation)
        self.module = FinetuneModule(
            family, start.backbone, family.metrics(validation), conf.optim, conf.trainer.max_steps
        )
        self.main_metric = task.main_metric or cls.main_metric
        self.val_loader: DataLoader = DataLoader(validation_features, batch_size=task.batch_size, collate_fn=_collate)  # type: ignore[arg-type]

    def tags(self) -> dict[str, str]:
        return {
            "lmlab.kind": "finetune",
            "lmlab.task": self.task.name,
            "lmlab.task_family": self.task.family,
            "lmlab.labels": json.dumps(self.labels),
            "lmlab.main_metric": self.main_metric,
            "lmlab.select": self.task.select,
            "lmlab.tokenizer_fingerprint": self.start.tokenizer.fingerprint,
            **self.start.lineage,
        }

    def run_name(self) -> str:
        return f"{self.task.name}-{self.start.lineage['lmlab.pretrained_objective']}-{self.run_dir.name}"

    @property
    def monitor(self) -> tuple[str, str]:
        # Every family's main metric is better higher (accuracy, F1, ROUGE); the validation loss is better lower.
        return f"val/{self.main_metric}", "min" if self.main_metric == "loss" else "max"

    def fit(self, trainer: pl.Trainer, ckpt_path: Path | None) -> None:
        if ckpt_path is None:
            trainer.validate(self.module, self.val_loader, verbose=False)
            if self.monitor[0] not in trainer.callback_metrics:
                found = sorted(k.removeprefix("val/") for k in trainer.callback_metrics if k.startswith("val/"))
                raise InputError(
                    f"task.main_metric={self.main_metric!r} is not a metric of {self.task.family}; it reports {found}"
                )
        batch = self.task.batch_size
        examples = ExampleStream(self.train_features, self.conf.trainer.max_steps * batch, self.conf.seed)
        train = StepLoader(examples, batch, lambda: trainer.global_step, collate=_collate)
        trainer.fit(self.module, train, self.val_loader, ckpt_path=ckpt_path, weights_only=True)

    def results(self, trainer: pl.Trainer | None, best: Path | None) -> dict[str, float]:
        assert trainer is not None
        if self.task.select == "best" and best is not None:
            self.module.load_state_dict(load_checkpoint_weights(best))
            trainer.validate(self.module, self.val_loader, verbose=False)
        return {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/")}

    def export(self) -> Export:
        weights = torch.nn.ModuleDict({"backbone": self.module.backbone, "head": self.module.head})
        metadata = {"labels": json.dumps(self.labels), "select": self.task.select, **self.start.lineage}
        return Export(
            weights, self.start.backbone.cfg, self.start.tokenizer, metadata, {"labels.json": json.dumps(self.labels)}
        )
