"""The lifecycle every stage runs, written once.

`run_stage(cfg, run_dir, stage)` owns the order of things: parse the config into the stage's schema, let the stage
read its inputs and build its module (every refusal happens there, before anything is written), check the run dir
is writable, reuse a job that already finished on the same config and inputs, find the resume point and check the
config and inputs a resume continues with, open the MLflow run (the lead process only, so one run per job however
many ranks train it), train under the checkpoint, signal and non-finite-loss callbacks, record a failure or a stop,
export, log the stage's final metrics, finish the run and print where everything is.

A stage (`Stage`) says only what is its own: what it reads and builds, its tags, how it fits, what it exports and
what it measures after training. Like a torchtune recipe's setup / train / save, with the lifecycle around them
held here rather than repeated in each recipe."""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, ClassVar, Generic, TypeVar

import pytorch_lightning as pl
import torch
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.callbacks import Callback

from lmlab.atomic_file import check_writable_dir
from lmlab.callbacks import ValidateOnLastStep
from lmlab.callbacks.nonfinite import StopOnNonFiniteLoss
from lmlab.callbacks.preemption import StopOnSignal, StoppedOnSignal
from lmlab.callbacks.rng_state import RngState
from lmlab.data.tokenizer import TrainedTokenizer
from lmlab.models import ModelConfig
from lmlab.runs.checkpoints import LAST
from lmlab.runs.config_drift import bind_inputs, check_resume_config
from lmlab.runs.console import closing_summary
from lmlab.runs.entry import lead_process
from lmlab.runs.export_dir import write_export
from lmlab.runs.finished import finished_metrics, finished_on_other_inputs, record_finished
from lmlab.runs.resume import checkpoint_callbacks, record_start, record_stop, resume_point
from lmlab.runs.run_record import failure_recorded, track_run
from lmlab.runs.stage_config import start_stage
from lmlab.runs.trainer import build_trainer, lightning_logger
from lmlab.tracking.identity import redacted
from lmlab.tracking.mlflow_run import MlflowRun

log = logging.getLogger(__name__)

C = TypeVar("C")


@dataclass
class Export:
    """What a stage exports: `weights` (a module of backbone.* and head.*), the architecture and tokenizer they read
    with, the stage's metadata and text files (the driver adds the step, the run id and config.yaml)."""

    weights: torch.nn.Module
    model_cfg: ModelConfig
    tokenizer: TrainedTokenizer
    metadata: dict[str, str] = field(default_factory=dict)
    texts: dict[str, str] = field(default_factory=dict)


class Stage(ABC, Generic[C]):
    """What one stage does inside the driver's lifecycle. `conf` is the stage's typed config, parsed once."""

    schema: ClassVar[type]
    # A stage that steps its optimiser itself clips its own gradients (Lightning clips only automatic optimisation).
    clips_itself: ClassVar[bool] = False
    # Set by setup(): what the stage trains, and the fingerprints of what it reads (a resume, and the reuse of a
    # finished run, are bound to them).
    module: pl.LightningModule
    inputs: dict[str, str]

    def __init__(self, conf: C, run_dir: Path) -> None:
        self.conf = conf
        self.run_dir = run_dir

    @abstractmethod
    def setup(self) -> None:
        """Read the inputs and build the module (`module`, `inputs`): everything that can refuse them runs here,
        before any write."""

    @property
    def trains(self) -> bool:
        """Whether the stage trains (a meta-learning baseline only adapts at meta-test)."""
        return True

    @abstractmethod
    def tags(self) -> dict[str, str]: ...

    @abstractmethod
    def run_name(self) -> str: ...

    @property
    @abstractmethod
    def monitor(self) -> tuple[str, str]:
        """The validation metric the best checkpoint is chosen by, and "min" or "max"."""

    def callbacks(self) -> list[Callback]:
        """The stage's own callbacks, besides the lifecycle's."""
        return []

    @property
    def find_unused_parameters(self) -> bool:
        return False

    def started(self, tracked: MlflowRun | None, *, resumed: bool) -> None:
        """Files the stage writes (and logs) when its run starts; the lead process only."""

    @abstractmethod
    def fit(self, trainer: pl.Trainer, ckpt_path: Path | None) -> None: ...

    def results(self, trainer: pl.Trainer | None, best: Path | None) -> dict[str, float]:
        """The final metrics (every rank computes them); by default the trainer's last logged ones."""
        assert trainer is not None
        return {k: float(v) for k, v in trainer.callback_metrics.items()}

    @abstractmethod
    def export(self) -> Export:
        """What to export; called on every rank (gathering sharded weights is a collective), written by the lead."""

    def after_export(self, export_dir: Path, tracked: MlflowRun | None) -> dict[str, float]:
        """What the stage measures or writes once exported (lead process); metrics it adds to the results."""
        return {}

    def step(self) -> int:
        return self.module.global_step


def run_stage(cfg: DictConfig, run_dir: Path, stage_cls: type[Stage[Any]]) -> dict[str, float]:
    """Run the stage `stage_cls` on the composed `cfg` in `run_dir`; returns its final metrics."""
    conf: Any = start_stage(cfg, stage_cls.schema)
    run_dir = Path(run_dir)
    stage = stage_cls(conf, run_dir)
    stage.setup()
    lead = lead_process()
    ckpt_dir = run_dir / "checkpoints"
    if lead:
        check_writable_dir(ckpt_dir, "the checkpoint directory")  # which also proves the run dir writable
        if (run_dir / "export").exists():  # an export dir is made when there is a run to export, not before
            check_writable_dir(run_dir / "export", "the export directory")
    resolved = redacted(OmegaConf.to_container(cfg, resolve=True))
    inputs = stage.inputs
    done = finished_metrics(run_dir, resolved, inputs) if conf.resume and conf.ckpt_path is None else None
    if done is not None:
        log.info("%s already finished with this config on these inputs: its result is reused", run_dir)
        log.info("%s", closing_summary(run_dir, done, None, Path(conf.paths.root)))
        return done
    # A job that finished on other data (an edited file) is over: the same command is a new job on the new data.
    new_job = conf.ckpt_path is None and not conf.allow_config_change
    new_job = new_job and finished_on_other_inputs(run_dir, resolved, inputs)
    if new_job:
        log.info("%s finished on other inputs (its data changed since): a new job starts afresh", run_dir)
    start = resume_point(conf.ckpt_path, conf.resume, ckpt_dir) if stage.trains and not new_job else None
    resuming = start is not None
    changes = check_resume_config(run_dir, resolved, conf.allow_config_change) if resuming else {}
    changes.update(bind_inputs(run_dir, inputs, resuming=resuming, allowed=conf.allow_config_change, lead=lead))
    tracked = None
    if lead:
        resume_tags = record_start(run_dir, resolved, start, changes)
        tracked = track_run(
            conf.logger,
            root=Path(conf.paths.root),
            run_dir=run_dir,
            run_name=stage.run_name(),
            tags=stage.tags(),
            resolved=resolved,
            resume_tags=resume_tags,
        )
        stage.started(tracked, resumed=resuming)
    trainer, best = None, None
    with failure_recorded(tracked):
        if stage.trains:
            stop = StopOnSignal(ckpt_dir / LAST)
            best, last = checkpoint_callbacks(ckpt_dir, *stage.monitor)
            trainer = build_trainer(
                replace(conf.trainer, gradient_clip_val=0.0) if stage.clips_itself else conf.trainer,
                run_dir,
                lightning_logger(conf.logger, run_dir, tracked),
                [StopOnNonFiniteLoss(), best, last, *stage.callbacks(), ValidateOnLastStep(), stop, RngState()],
                find_unused_parameters=stage.find_unused_parameters,
            )
            try:
                stage.fit(trainer, None if start is None else start[0])
            except StoppedOnSignal as stopped:
                record_stop(tracked, stop, stopped)
                return {k: float(v) for k, v in trainer.callback_metrics.items()}
        best_path = Path(best.best_model_path) if best is not None and best.best_model_path else None
        logged = set() if trainer is None else set(trainer.callback_metrics)
        metrics = stage.results(trainer, best_path)
        export = stage.export()  # on every rank: gathering sharded (FSDP) weights is a collective
        if not lead:
            return metrics
        export_dir = _write(stage, export, resolved, tracked)
        metrics.update(stage.after_export(export_dir, tracked))
        if tracked is not None:
            for key, value in metrics.items():  # what the stage measured beyond Lightning's logging: at the last step
                if key not in logged:
                    tracked.client.log_metric(tracked.run_id, key, value, step=stage.step())
            tracked.client.log_artifacts(tracked.run_id, str(export_dir))
            if best_path is not None:
                tracked.client.set_tag(tracked.run_id, "lmlab.best_checkpoint", str(best_path))
    if tracked is not None:
        tracked.finish()
    record_finished(run_dir, resolved, inputs, metrics)
    log.info("%s", closing_summary(run_dir, metrics, tracked, Path(conf.paths.root), stage.step()))
    return metrics


def _write(stage: Stage[Any], export: Export, resolved: dict[str, Any], tracked: MlflowRun | None) -> Path:
    metadata = {
        **export.metadata,
        "global_step": str(stage.step()),
        "run_id": "" if tracked is None else tracked.run_id,
    }
    texts = {**export.texts, "config.yaml": OmegaConf.to_yaml(resolved)}
    return write_export(stage.run_dir / "export", export.weights, export.model_cfg, export.tokenizer, metadata, texts)
