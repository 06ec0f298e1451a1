"""A pretraining run from a composed config: data, objective, model, tracking, Lightning, export."""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, replace
from pathlib import Path

import pytorch_lightning as pl
from omegaconf import DictConfig
from pytorch_lightning.callbacks import Callback

from lmlab.callbacks import MetricHistory, token_throughput
from lmlab.data.datamodule import PretrainDataModule
from lmlab.data.tokenizer import TrainedTokenizer
from lmlab.errors import InputError
from lmlab.models import ModelConfig
from lmlab.objectives import build_objective, objective_class
from lmlab.pretraining.config import TrainConfig
from lmlab.pretraining.examples import describe_examples
from lmlab.pretraining.module import PretrainModule
from lmlab.runs.driver import Export, Stage, run_stage
from lmlab.runs.entry import lead_process
from lmlab.runs.export_dir import ExportedRun, load_checked, strip_prefix
from lmlab.runs.sharding import Sharding
from lmlab.runs.starting_point import check_tokenizer_path, load_run, refuse_unused_architecture
from lmlab.tracking.loss_curve import plot_loss_curve
from lmlab.tracking.mlflow_run import MlflowRun

log = logging.getLogger(__name__)


def pretrain(cfg: DictConfig, run_dir: Path) -> dict[str, float]:
    """Train as configured, writing checkpoints and exports under `run_dir`; returns the final metrics."""
    return run_stage(cfg, run_dir, Pretraining)


class Pretraining(Stage[TrainConfig]):
    """An objective on a backbone, trained on a corpus; exported with its loss curve."""

    schema = TrainConfig
    module: PretrainModule

    def setup(self) -> None:
        refuse_unused_architecture(self.conf.init, "init", ("model",))
        self.data, self.tokenizer, self.module, self.lineage = build_pretraining(self.conf)
        self.history = MetricHistory(self.conf.trainer.log_every_n_steps)
        self.inputs = {
            "data_fingerprint": self.data.corpus_fingerprint,
            "tokenizer_fingerprint": self.tokenizer.fingerprint,
        }

    def tags(self) -> dict[str, str]:
        return {
            "lmlab.objective": self.conf.objective["name"],
            "lmlab.n_params": str(sum(p.numel() for p in self.module.parameters())),
            "lmlab.data_fingerprint": self.data.corpus_fingerprint,
            "lmlab.tokenizer_fingerprint": self.tokenizer.fingerprint,
            **self.lineage,
        }

    def run_name(self) -> str:
        return f"{self.conf.objective['name']}-{self.run_dir.name}"

    @property
    def monitor(self) -> tuple[str, str]:
        return "val/loss", "min"

    @property
    def find_unused_parameters(self) -> bool:
        return self.module.objective.leaves_parameters_unused

    def callbacks(self) -> list[Callback]:
        return [self.history, token_throughput()]

    def started(self, tracked: MlflowRun | None, *, resumed: bool) -> None:
        examples = self.run_dir / "examples.txt"
        examples.write_text(
            describe_examples(self.module.objective, self.data.blocks("train"), self.tokenizer, self.conf.seed)
        )
        if tracked is not None and not resumed:
            tracked.client.log_artifact(tracked.run_id, str(examples))

    def fit(self, trainer: pl.Trainer, ckpt_path: Path | None) -> None:
        if ckpt_path is None:
            # Validate the untrained model first, so every curve (and every "start -> end" figure) begins at step 0.
            trainer.validate(self.module, datamodule=self.data, verbose=False)
        trainer.fit(self.module, datamodule=self.data, ckpt_path=ckpt_path, weights_only=True)

    def export(self) -> Export:
        metadata = {"objective": json.dumps(asdict(self.module.objective.cfg))}
        return Export(self.module.exported_weights(), self.module.backbone.cfg, self.tokenizer, metadata)

    def after_export(self, export_dir: Path, tracked: MlflowRun | None) -> dict[str, float]:
        title = f"{self.conf.experiment}: {self.conf.objective['name']} / {self.run_dir.name}"
        plot_loss_curve(self.history.history, export_dir / "loss_curve.png", title)
        return {}


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
